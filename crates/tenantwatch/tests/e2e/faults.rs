//! Fault injection through the real daemon: a full disk under SQLite, a config reload in the
//! middle of a burst of probes, a Graph 429 storm. In each: no panic, no crash, no false
//! critical, the right `unknown` reasons, recovery once the fault clears, nothing lost from
//! the outbox.
//!
//! The full disk is the daemon's own file size limit (`RLIMIT_FSIZE`, set on the running
//! process with `prlimit`, as systemd's `LimitFSIZE=` would): every write to a regular file
//! then fails with `EFBIG`, which is what SQLite sees on a full filesystem (a failed write),
//! without root, a loop device or a special kernel feature. Lowering and raising one's own
//! soft limit needs no privilege.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tw_core::{CheckKind, Status};
use tw_sim::sink::{CapturedRequest, HttpSink};
use tw_sim::smtp::RcptBehaviour;
use tw_store::Store;

use crate::support::{eventually, temp_dir, Sims, TestDaemon};

const ADMIN: &str = "admin@contoso.example";
const HOOK_SECRET: &str = "faults-test-webhook-secret";

fn status_series(check: &str, target: &str, tenant: &str) -> String {
    format!("tenantwatch_check_status{{check=\"{check}\",target=\"{target}\",tenant=\"{tenant}\"}}")
}

fn last_run_series(check: &str, target: &str, tenant: &str) -> String {
    format!("tenantwatch_check_last_run_timestamp_seconds{{check=\"{check}\",target=\"{target}\",tenant=\"{tenant}\"}}")
}

/// Sets the daemon's soft file size limit (`None`: unlimited), leaving the hard limit alone.
fn set_file_size_limit(daemon: &TestDaemon, bytes: Option<u64>) {
    let soft = bytes.map_or("unlimited".to_owned(), |b| b.to_string());
    let output = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(daemon.pid().to_string())
        .arg(format!("--fsize={soft}:"))
        .output()
        .expect("prlimit (util-linux) is needed to limit the daemon's file size");
    assert!(
        output.status.success(),
        "prlimit failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn hook_requests(sink: &HttpSink) -> Vec<CapturedRequest> {
    sink.requests()
        .into_iter()
        .filter(|r| r.path == "/hook")
        .collect()
}

fn kind_of(request: &CapturedRequest) -> String {
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    body["kind"].as_str().unwrap().to_owned()
}

fn no_panic(daemon: &TestDaemon) {
    let logs = daemon.logs();
    assert!(
        logs.iter().all(|line| !line.contains("panicked")),
        "the daemon panicked:\n{}",
        logs.join("\n")
    );
}

/// One tenant with `ADMIN` watched over SMTP, and a webhook receiver at `sink`.
fn alerting_config(sims: &Sims, sink: &HttpSink, secret_file: &std::path::Path) -> String {
    format!(
        "[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n{}\n[[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [\"{ADMIN}\"]\n\n[alerting]\nconfirm = 2\n\n[[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\nsecret_file = \"{}\"\n",
        sims.config_sections(),
        sink.url(),
        secret_file.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_probing_says_why_on_readyz_and_loses_no_alert() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, HOOK_SECRET).unwrap();
    let mut daemon =
        TestDaemon::spawn(dir.path(), &alerting_config(&sims, &sink, &secret_file)).await;
    let admin = status_series("smtp_rcpt", ADMIN, "contoso");
    let last_run = last_run_series("smtp_rcpt", ADMIN, "contoso");
    eventually(Duration::from_secs(15), "admin to be ok", || async {
        (daemon.metric(&admin).await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(daemon.get("/readyz").await.0, 200);
    let before_full = daemon.metric(&last_run).await.unwrap();

    // The disk fills up, then the identity vanishes: the alert is decided while nothing can
    // be written.
    set_file_size_limit(&daemon, Some(0));
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);

    // Polled by hand rather than with `eventually`: a daemon killed by the full disk must
    // fail the test with its exit status, not with a refused connection.
    let deadline = Instant::now() + Duration::from_secs(25);
    let not_ready = loop {
        if let Some(status) = daemon.exited() {
            panic!(
                "the daemon died on a full disk: {status}; logs:\n{}",
                daemon.logs().join("\n")
            );
        }
        let (status, body) = daemon.get("/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said the store is not writable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        not_ready.contains("store not writable: database unavailable"),
        "{not_ready}"
    );
    // Probing goes on and the verdict is on /metrics although it cannot be stored.
    eventually(
        Duration::from_secs(25),
        "admin to turn critical on /metrics while the disk is full",
        || async { (daemon.metric(&admin).await == Some(2.0)).then_some(()) },
    )
    .await;
    let during_full = daemon.metric(&last_run).await.unwrap();
    assert!(during_full > before_full, "probing stopped");
    // Long enough for the second confirming run: the alert is due but not yet durable.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(daemon.exited().is_none(), "the daemon died on a full disk");
    assert_eq!(daemon.get("/readyz").await.0, 503);
    assert!(
        daemon
            .metric("tenantwatch_store_pending_observations")
            .await
            .unwrap()
            >= 2.0
    );
    assert!(
        daemon
            .metric("tenantwatch_store_errors_total")
            .await
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        daemon
            .metric("tenantwatch_store_dropped_observations_total")
            .await,
        Some(0.0)
    );
    // An alert is sent only once it is committed to the outbox.
    assert!(hook_requests(&sink).is_empty(), "{:#?}", sink.requests());

    // Space returns: the retried batch commits with its alert, which is delivered once.
    set_file_size_limit(&daemon, None);
    eventually(
        Duration::from_secs(40),
        "/readyz to recover once writes succeed",
        || async { (daemon.get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the firing message to be delivered after recovery",
        || async { (!hook_requests(&sink).is_empty()).then_some(()) },
    )
    .await;
    // Another interval: nothing is delivered twice.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let hooks = hook_requests(&sink);
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    assert_eq!(kind_of(&hooks[0]), "firing");
    assert_eq!(
        daemon
            .metric("tenantwatch_store_pending_observations")
            .await,
        Some(0.0)
    );
    assert!(daemon
        .logs()
        .iter()
        .any(|line| line.contains("Store writable again")));
    no_panic(&daemon);

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(6)).await;
    assert!(status.success(), "{status:?}");
    let store = Store::open(&daemon.db_path).await.unwrap();
    let history = store
        .observations(Some("contoso"), Some(CheckKind::SmtpRcpt), Some(ADMIN), 100)
        .await
        .unwrap();
    assert!(
        history.iter().any(|o| o.status == Status::Critical && {
            let started = o.started_at.as_secs_f64();
            started > before_full && started <= during_full + 0.001
        }),
        "the runs made while the disk was full reached the database: {history:#?}"
    );
    let outbox = store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:#?}");
    assert_eq!(
        (outbox[0].receiver.as_str(), outbox[0].state.as_str()),
        ("hook", "sent")
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_sent_while_the_disk_is_full_is_not_sent_again_and_again() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    // The receiver is down when the alert is committed: the row waits in the outbox.
    sink.set_status(503);
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, HOOK_SECRET).unwrap();
    let mut daemon =
        TestDaemon::spawn(dir.path(), &alerting_config(&sims, &sink, &secret_file)).await;
    eventually(
        Duration::from_secs(40),
        "a first delivery attempt to fail",
        || async {
            (daemon
                .metric("tenantwatch_notifications_total{receiver=\"hook\",result=\"transient\"}")
                .await
                >= Some(1.0))
            .then_some(())
        },
    )
    .await;

    // The disk fills up, then the receiver comes back: the retry reaches it, but the daemon
    // cannot record that it did.
    set_file_size_limit(&daemon, Some(0));
    let failed_attempts = hook_requests(&sink).len();
    sink.set_status(200);
    eventually(
        Duration::from_secs(20),
        "the retry to reach the receiver",
        || async { (hook_requests(&sink).len() > failed_attempts).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let while_full = hook_requests(&sink).len() - failed_attempts;
    assert_eq!(
        while_full, 1,
        "the receiver got the same message {while_full} times while the disk was full"
    );
    assert!(daemon.exited().is_none(), "the daemon died on a full disk");

    set_file_size_limit(&daemon, None);
    eventually(
        Duration::from_secs(40),
        "/readyz to recover once writes succeed",
        || async { (daemon.get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the outbox to be empty",
        || async { (daemon.metric("tenantwatch_outbox_pending").await == Some(0.0)).then_some(()) },
    )
    .await;
    let hooks = hook_requests(&sink);
    assert_eq!(hooks.len() - failed_attempts, 1, "{hooks:#?}");
    let key = hooks[0].header("idempotency-key").unwrap();
    assert!(hooks
        .iter()
        .all(|r| r.header("idempotency-key") == Some(key)));
    no_panic(&daemon);

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(6)).await;
    assert!(status.success(), "{status:?}");
    let store = Store::open(&daemon.db_path).await.unwrap();
    let outbox = store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:#?}");
    assert_eq!(
        (outbox[0].receiver.as_str(), outbox[0].state.as_str()),
        ("hook", "sent")
    );
    store.close().await;
}
