//! Alerting as an on-call person sees it: one message per receiver when an identity vanishes,
//! one when it is back, nothing lost when the daemon is killed mid-delivery or a receiver is
//! down, and the webhook secret nowhere but in the signature.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tw_sim::sink::{CapturedRequest, HttpSink};
use tw_sim::smtp::RcptBehaviour;
use tw_store::Store;

use crate::support::{eventually, temp_dir, Sims, TestDaemon};

const ADMIN: &str = "admin@contoso.example";
const CANARY: &str = "canary-7f3c9e1d-webhook-secret";

fn config(
    sims: &Sims,
    sink: &HttpSink,
    secret_file: &std::path::Path,
    extra_alerting: &str,
) -> String {
    format!(
        "[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n{}\n[[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [\"{ADMIN}\"]\n[tenants.checks.dns]\nenabled = false\n\n[alerting]\nconfirm = 2\n{extra_alerting}\n[[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\nsecret_file = \"{}\"\n\n[[receivers]]\nname = \"phone\"\nkind = \"ntfy\"\nurl = \"{}/oncall\"\n",
        sims.config_sections(),
        sink.url(),
        secret_file.display(),
        sink.url()
    )
}

fn at(sink: &HttpSink, path: &str) -> Vec<CapturedRequest> {
    sink.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

fn kind_of(request: &CapturedRequest) -> String {
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    body["kind"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_identity_pages_each_receiver_once_and_its_return_once() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, format!("{CANARY}\n")).unwrap();
    let mut daemon = TestDaemon::spawn(dir.path(), &config(&sims, &sink, &secret_file, "")).await;
    let admin = format!(
        "tenantwatch_check_status{{check=\"smtp_rcpt\",target=\"{ADMIN}\",tenant=\"contoso\"}}"
    );
    eventually(Duration::from_secs(15), "admin to be ok", || async {
        (daemon.metric(&admin).await == Some(0.0)).then_some(())
    })
    .await;

    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let vanished = Instant::now();
    eventually(
        Duration::from_secs(30),
        "a firing message on both receivers",
        || async {
            (at(&sink, "/hook").len() == 1 && at(&sink, "/oncall").len() == 1).then_some(())
        },
    )
    .await;
    // Two confirming runs at a 10 s interval, then delivery: the design's bound is two probe
    // intervals plus 10 s.
    assert!(
        vanished.elapsed() <= Duration::from_secs(30),
        "paged after {:?}",
        vanished.elapsed()
    );

    let hook = &at(&sink, "/hook")[0];
    assert_eq!(kind_of(hook), "firing");
    let body: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(
        (
            body["severity"].as_str(),
            body["target"].as_str(),
            body["reason"].as_str()
        ),
        (Some("critical"), Some(ADMIN), Some("recipient_not_found"))
    );
    let timestamp = hook.header("x-tenantwatch-timestamp").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(CANARY.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", hook.body).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hook.header("x-tenantwatch-signature"),
        Some(format!("sha256={expected}").as_str())
    );
    assert_eq!(hook.header("idempotency-key"), body["id"].as_str());
    let phone = &at(&sink, "/oncall")[0];
    assert!(
        phone.header("title").is_some_and(|t| t.contains("contoso")),
        "{phone:?}"
    );

    // `tenantwatch alerts` reads the same state from the database while the daemon runs.
    let config_path = daemon.config_path.clone();
    let listed = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantwatch"))
            .args(["alerts", "--config"])
            .arg(config_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.status.code(), Some(2), "{listing}");
    assert!(
        listing.contains("FIRING") && listing.contains("critical") && listing.contains(ADMIN),
        "{listing}"
    );

    // Still gone on the next runs: no second page within the repeat interval.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(at(&sink, "/hook").len(), 1);

    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    eventually(
        Duration::from_secs(25),
        "one resolved message on both receivers",
        || async {
            (at(&sink, "/hook").len() == 2 && at(&sink, "/oncall").len() == 2).then_some(())
        },
    )
    .await;
    assert_eq!(kind_of(&at(&sink, "/hook")[1]), "resolved");
    assert_eq!(
        daemon
            .metric("tenantwatch_notifications_total{receiver=\"hook\",result=\"sent\"}")
            .await,
        Some(2.0)
    );

    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
    // The secret reached the receiver only as a signature: not in logs, metrics or the database.
    let logs = daemon.logs().join("\n");
    assert!(!logs.contains(CANARY), "secret in the logs");
    let database = std::fs::read(&daemon.db_path).unwrap();
    assert!(
        !String::from_utf8_lossy(&database).contains(CANARY),
        "secret in the database"
    );
    assert!(sink
        .requests()
        .iter()
        .all(|r| !r.body.contains(CANARY) && r.headers.iter().all(|(_, v)| !v.contains(CANARY))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_loses_no_notification() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    // The receiver takes the request and hangs: the daemon dies mid-delivery.
    sink.set_delay(Some(Duration::from_secs(120)));
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, CANARY).unwrap();
    let mut daemon = TestDaemon::spawn(dir.path(), &config(&sims, &sink, &secret_file, "")).await;
    eventually(
        Duration::from_secs(35),
        "the firing message to reach the hanging receiver",
        || async { (at(&sink, "/hook").len() == 1).then_some(()) },
    )
    .await;
    let first_id = at(&sink, "/hook")[0]
        .header("idempotency-key")
        .unwrap()
        .to_owned();
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(5)).await;

    sink.set_delay(None);
    let args = vec![
        "run".into(),
        "--config".into(),
        daemon.config_path.clone().into_os_string(),
    ];
    let mut restarted =
        TestDaemon::start(args, daemon.config_path.clone(), daemon.db_path.clone()).await;
    eventually(
        Duration::from_secs(15),
        "the same notification to be delivered after the restart",
        || async {
            (restarted
                .metric("tenantwatch_notifications_total{receiver=\"hook\",result=\"sent\"}")
                .await
                == Some(1.0))
            .then_some(())
        },
    )
    .await;
    let hooks = at(&sink, "/hook");
    // At least once: the retry carries the same idempotency key, and nothing new was paged.
    assert!(
        hooks
            .iter()
            .all(|r| r.header("idempotency-key") == Some(first_id.as_str())),
        "{hooks:#?}"
    );
    assert!(hooks.iter().all(|r| kind_of(r) == "firing"));
    restarted.signal("TERM");
    assert!(restarted.wait_exit(Duration::from_secs(6)).await.success());

    let store = Store::open(&restarted.db_path).await.unwrap();
    let outbox = store.outbox().await.unwrap();
    let hook_rows: Vec<_> = outbox.iter().filter(|r| r.receiver == "hook").collect();
    assert_eq!(hook_rows.len(), 1, "{outbox:#?}");
    assert_eq!(hook_rows[0].state, "sent");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_the_whole_expiry_window_is_parked_as_expired_and_counted() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    sink.set_status(503);
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, CANARY).unwrap();
    let mut daemon = TestDaemon::spawn(
        dir.path(),
        &config(&sims, &sink, &secret_file, "delivery_expiry = \"12s\"\n"),
    )
    .await;

    eventually(
        Duration::from_secs(60),
        "the undeliverable notifications to expire",
        || async {
            (daemon
                .metric("tenantwatch_notifications_total{receiver=\"hook\",result=\"expired\"}")
                .await
                == Some(1.0))
            .then_some(())
        },
    )
    .await;
    assert!(
        daemon
            .metric("tenantwatch_notifications_total{receiver=\"hook\",result=\"transient\"}")
            .await
            .unwrap()
            >= 2.0,
        "retried before expiring"
    );
    assert!(daemon
        .logs()
        .iter()
        .any(|line| line.contains("Notification expired undelivered")
            && line.contains("\"receiver\":\"hook\"")));
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
    let store = Store::open(&daemon.db_path).await.unwrap();
    let outbox = store.outbox().await.unwrap();
    assert!(
        outbox
            .iter()
            .filter(|r| r.receiver == "hook")
            .all(|r| r.state == "expired"),
        "{outbox:#?}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_holds_alerts_back_but_not_the_verdict() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, CANARY).unwrap();
    let now = std::time::SystemTime::now();
    let window = format!(
        "\n[[silences]]\ntenant = \"contoso\"\nstart = \"{}\"\nend = \"{}\"\nreason = \"mailbox migration\"\n",
        humantime::format_rfc3339_seconds(now - Duration::from_secs(60)),
        humantime::format_rfc3339_seconds(now + Duration::from_secs(3_600))
    );
    let mut daemon = TestDaemon::spawn(
        dir.path(),
        &format!("{}{window}", config(&sims, &sink, &secret_file, "")),
    )
    .await;
    let admin = format!(
        "tenantwatch_check_status{{check=\"smtp_rcpt\",target=\"{ADMIN}\",tenant=\"contoso\"}}"
    );
    eventually(
        Duration::from_secs(35),
        "the alert to fire, silenced",
        || async {
            daemon
                .logs()
                .iter()
                .any(|line| {
                    line.contains("Alert silenced by a maintenance window")
                        && line.contains("mailbox migration")
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        daemon.metric(&admin).await,
        Some(2.0),
        "the verdict is still shown"
    );
    assert_eq!(
        daemon
            .metric("tenantwatch_alert_events_total{kind=\"firing\",severity=\"critical\"}")
            .await,
        Some(1.0)
    );
    assert!(sink.requests().is_empty(), "{:#?}", sink.requests());
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
}
