//! The daemon as an operator runs it: an identity vanishes and /metrics and SQLite show it;
//! SIGTERM stops it in time; SIGHUP with a bad config keeps the running one.

use std::time::Duration;

use tokio::time::Instant;
use tw_core::{CheckKind, Direction, Evidence, Reason, Status};
use tw_sim::smtp::RcptBehaviour;
use tw_store::Store;

use crate::support::{eventually, temp_dir, Sims, TestDaemon};

const ADMIN: &str = "admin@contoso.example";
const BREAKGLASS: &str = "breakglass@contoso.example";

fn status_series(check: &str, target: &str, tenant: &str) -> String {
    format!("tenantwatch_check_status{{check=\"{check}\",target=\"{target}\",tenant=\"{tenant}\"}}")
}

fn contoso_config(sims: &Sims, watch: &[&str]) -> String {
    let watch = watch
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n{}\n[[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [{watch}]\n",
        sims.config_sections()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_vanishing_turns_critical_on_metrics_with_its_transcript_stored() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    sims.smtp.set_recipient(BREAKGLASS, RcptBehaviour::Accept);
    let mut daemon =
        TestDaemon::spawn(dir.path(), &contoso_config(&sims, &[ADMIN, BREAKGLASS])).await;
    let admin = status_series("smtp_rcpt", ADMIN, "contoso");

    // First runs start at a phase offset within the 10 s interval.
    eventually(Duration::from_secs(15), "admin to be ok", || async {
        (daemon.metric(&admin).await == Some(0.0)).then_some(())
    })
    .await;
    let (ready, _) = daemon.get("/readyz").await;
    assert_eq!(ready, 200);

    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let flipped = Instant::now();
    eventually(
        Duration::from_secs(12),
        "admin to turn critical within one interval",
        || async { (daemon.metric(&admin).await == Some(2.0)).then_some(()) },
    )
    .await;
    let detection = flipped.elapsed();
    assert!(
        detection <= Duration::from_secs(11),
        "critical after {detection:?}, interval is 10s"
    );
    assert_eq!(
        daemon
            .metric(&status_series("smtp_rcpt", BREAKGLASS, "contoso"))
            .await,
        Some(0.0)
    );
    assert_eq!(daemon.metric("tenantwatch_smtp_rcpt_reply_code{target=\"admin@contoso.example\",tenant=\"contoso\"}").await, Some(550.0));
    assert!(!sims.smtp.saw_data(), "the probe must never send DATA");

    let last_run_before_stop = daemon
        .metric(&format!("tenantwatch_check_last_run_timestamp_seconds{{check=\"smtp_rcpt\",target=\"{ADMIN}\",tenant=\"contoso\"}}"))
        .await
        .unwrap();
    let stopping = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        daemon.logs().join("\n")
    );
    assert!(stopping.elapsed() < Duration::from_secs(5));

    let store = Store::open(&daemon.db_path).await.unwrap();
    let history = store
        .observations(Some("contoso"), Some(CheckKind::SmtpRcpt), Some(ADMIN), 50)
        .await
        .unwrap();
    let critical = history
        .iter()
        .find(|o| o.status == Status::Critical)
        .expect("critical observation stored");
    assert_eq!(critical.reason, Reason::RecipientNotFound);
    assert!(critical.state_change);
    assert!(
        history
            .iter()
            .any(|o| o.status == Status::Ok && o.state_change),
        "the ok it changed from is kept too"
    );
    let Evidence::SmtpRcpt(evidence) = &critical.evidence else {
        panic!("SMTP evidence expected, got {:?}", critical.evidence)
    };
    let said = |direction: Direction, prefix: &str| {
        evidence
            .transcript
            .iter()
            .any(|line| line.direction == direction && line.line.starts_with(prefix))
    };
    assert!(said(
        Direction::Server,
        "220 AM5EUR02FT017.mail.protection.outlook.com"
    ));
    assert!(said(Direction::Client, "STARTTLS"));
    assert!(said(Direction::Client, &format!("RCPT TO:<{ADMIN}>")));
    assert!(said(
        Direction::Server,
        "550 5.4.1 Recipient address rejected: Access denied"
    ));
    assert!(said(Direction::Client, "QUIT"));
    assert!(evidence.tls.as_ref().is_some_and(|tls| tls.established));

    let states = store.check_states().await.unwrap();
    let admin_state = states.iter().find(|s| s.target == ADMIN).unwrap();
    assert_eq!(admin_state.status, Status::Critical);
    assert!(
        admin_state.last_run.as_secs_f64() >= last_run_before_stop,
        "the last batch before SIGTERM was committed"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_on_sighup_keeps_the_running_config_and_a_valid_one_applies() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    sims.smtp.set_recipient(BREAKGLASS, RcptBehaviour::Accept);
    let mut daemon = TestDaemon::spawn(dir.path(), &contoso_config(&sims, &[ADMIN])).await;
    let admin = status_series("smtp_rcpt", ADMIN, "contoso");
    eventually(Duration::from_secs(15), "admin to be ok", || async {
        (daemon.metric(&admin).await == Some(0.0)).then_some(())
    })
    .await;

    std::fs::write(&daemon.config_path, "[smtp]\nhelo_name = 42\n").unwrap();
    daemon.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "the failed reload to be counted",
        || async {
            (daemon
                .metric("tenantwatch_config_reloads_total{result=\"failure\"}")
                .await
                == Some(1.0))
            .then_some(())
        },
    )
    .await;
    assert!(daemon
        .logs()
        .iter()
        .any(|line| line.contains("Config reload failed") && line.contains("smtp.helo_name")));
    let (ready, _) = daemon.get("/readyz").await;
    assert_eq!(ready, 200, "still running the old config");
    assert_eq!(daemon.metric(&admin).await, Some(0.0));

    let valid = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\npath = \"{}\"\n\n{}",
        daemon.db_path.display(),
        contoso_config(&sims, &[ADMIN, BREAKGLASS])
    );
    std::fs::write(&daemon.config_path, valid).unwrap();
    daemon.signal("HUP");
    let breakglass = status_series("smtp_rcpt", BREAKGLASS, "contoso");
    eventually(
        Duration::from_secs(15),
        "the added address to be probed",
        || async { (daemon.metric(&breakglass).await == Some(0.0)).then_some(()) },
    )
    .await;
    assert_eq!(
        daemon
            .metric("tenantwatch_config_reloads_total{result=\"success\"}")
            .await,
        Some(1.0)
    );

    daemon.signal("INT");
    assert!(daemon.wait_exit(Duration::from_secs(5)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_keeps_probing_shows_on_readyz_and_metrics_and_recovers() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    let mut daemon = TestDaemon::spawn(dir.path(), &contoso_config(&sims, &[ADMIN])).await;
    let admin = status_series("smtp_rcpt", ADMIN, "contoso");
    let last_run = format!("tenantwatch_check_last_run_timestamp_seconds{{check=\"smtp_rcpt\",target=\"{ADMIN}\",tenant=\"contoso\"}}");
    eventually(Duration::from_secs(15), "admin to be ok", || async {
        (daemon.metric(&admin).await == Some(0.0)).then_some(())
    })
    .await;
    let before_lock = daemon.metric(&last_run).await.unwrap();

    // Another process holds SQLite's write lock, as a stuck backup job or a full disk would
    // stop writes; Python's sqlite3 is a second, independent SQLite client.
    let mut locker = tokio::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(float(sys.argv[2]))")
        .arg(&daemon.db_path)
        .arg("16")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is needed to hold a SQLite lock from another process");
    let mut said = String::new();
    tokio::io::AsyncBufReadExt::read_line(
        &mut tokio::io::BufReader::new(locker.stdout.take().unwrap()),
        &mut said,
    )
    .await
    .unwrap();
    assert_eq!(
        said, "locked\n",
        "the lock holder must hold the lock before the test goes on"
    );

    let (_, not_ready) = eventually(
        Duration::from_secs(25),
        "/readyz to report the store",
        || async {
            let (status, body) = daemon.get("/readyz").await;
            (status == 503).then_some((status, body))
        },
    )
    .await;
    assert!(
        not_ready.contains("store not writable: database unavailable"),
        "{not_ready}"
    );
    assert!(
        daemon
            .metric("tenantwatch_store_errors_total")
            .await
            .unwrap()
            >= 1.0
    );
    let during_lock = eventually(
        Duration::from_secs(12),
        "probing to go on while the store is locked",
        || async {
            daemon
                .metric(&last_run)
                .await
                .filter(|value| *value > before_lock)
        },
    )
    .await;

    assert!(locker.wait().await.unwrap().success());
    eventually(
        Duration::from_secs(40),
        "/readyz to recover once the lock is gone",
        || async { (daemon.get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(
        daemon
            .metric("tenantwatch_store_pending_observations")
            .await,
        Some(0.0)
    );
    assert!(daemon
        .logs()
        .iter()
        .any(|line| line.contains("Store write failed")));
    assert!(daemon
        .logs()
        .iter()
        .any(|line| line.contains("Store writable again")));

    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(5)).await.success());
    let store = Store::open(&daemon.db_path).await.unwrap();
    let state = store
        .check_states()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.target == ADMIN)
        .unwrap();
    assert!(
        state.last_run.as_secs_f64() >= during_lock,
        "the runs made while locked reached the database"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_says_started_then_pings_while_healthy() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    let stop_sink = tokio_util::sync::CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = tw_sim::sink::HttpSink::start(stop_sink).await.unwrap();
    let body = format!(
        "{}\n[heartbeat]\nurl = \"{}/ping/5d1e-token\"\ninterval = \"10s\"\n",
        contoso_config(&sims, &[ADMIN]),
        sink.url()
    );
    let mut daemon = TestDaemon::spawn(dir.path(), &body).await;
    eventually(
        Duration::from_secs(16),
        "a start ping and a healthy ping",
        || async {
            let paths: Vec<String> = sink.requests().into_iter().map(|r| r.path).collect();
            (paths.first().map(String::as_str) == Some("/ping/5d1e-token/start")
                && paths.iter().any(|p| p == "/ping/5d1e-token"))
            .then_some(())
        },
    )
    .await;
    assert!(sink
        .requests()
        .iter()
        .all(|r| r.method == "POST" && !r.path.ends_with("/fail")));
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
    assert!(
        daemon
            .logs()
            .iter()
            .all(|line| !line.contains("5d1e-token")),
        "the ping URL's token is never logged"
    );
}
