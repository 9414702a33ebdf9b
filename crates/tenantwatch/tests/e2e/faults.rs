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

const TENANT_ID: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const APP_SECRET: &str = "faults-test-app-secret-4Qz~";
const IT: &str = "it@contoso.example";
/// 429 answers in the storm: about three probe intervals of every Graph request.
const STORM: usize = 40;
/// The storm's `Retry-After`, in seconds.
const RETRY_AFTER_S: u64 = 2;

/// The Graph checks of the tenant: (check, target).
const GRAPH_CHECKS: [(&str, &str); 5] = [
    ("identity", ADMIN),
    ("identity", IT),
    ("licence", "contoso"),
    ("admins", "contoso"),
    ("health", "contoso"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_429_storm_is_unknown_throttled_never_critical_and_honours_retry_after() {
    use tw_core::Evidence;
    use tw_sim::entra::{EntraSim, Fault, FaultKind, HealthyTenant, SimServer};
    use tw_sim::tls::TestCa;

    let dir = temp_dir();
    let ca = TestCa::generate().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let sim = EntraSim::start(&ca, stop.clone()).await.unwrap();
    sim.add_healthy_tenant(&HealthyTenant {
        tenant_id: TENANT_ID,
        display_name: "Contoso",
        domains: &["contoso.example"],
        users: &[
            ("87d349ed-0000-4000-8000-5f2406dee5bd", ADMIN),
            ("97d349ed-0000-4000-8000-5f2406dee5be", IT),
        ],
        client_id: CLIENT_ID,
        client_secret: APP_SECRET,
    });
    let sink = HttpSink::start(stop).await.unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.ca_cert_pem).unwrap();
    let secret_path = dir.path().join("app-secret");
    std::fs::write(&secret_path, APP_SECRET).unwrap();
    let hook_secret = dir.path().join("hook-secret");
    std::fs::write(&hook_secret, HOOK_SECRET).unwrap();
    let body = format!(
        r#"[schedule]
interval = "10s"
timeout = "4s"

[smtp]
helo_name = "probe.msp.example"
mail_from = "probe@msp.example"

[entra]
login_url = "{login}"
graph_url = "{graph}"
rdap_bootstrap_url = "{rdap}"
extra_ca_file = "{ca}"

[app]
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"

[checks.dns]
enabled = false
[checks.smtp_rcpt]
enabled = false
# Hourly and every 15 minutes by default.
[checks.licence]
interval = "10s"
[checks.admins]
interval = "10s"
[checks.health]
interval = "10s"

[[tenants]]
name = "contoso"
domain = "contoso.example"
tenant_id = "{TENANT_ID}"
watch = ["{ADMIN}", "{IT}"]

[alerting]
confirm = 2

[[receivers]]
name = "hook"
kind = "webhook"
url = "{hook}/hook"
secret_file = "{hook_secret}"
"#,
        login = sim.login_url(),
        graph = sim.graph_url(),
        rdap = sim.rdap_bootstrap_url(),
        ca = ca_path.display(),
        secret = secret_path.display(),
        hook = sink.url(),
        hook_secret = hook_secret.display(),
    );
    let mut daemon = TestDaemon::spawn(dir.path(), &body).await;
    let series: Vec<String> = GRAPH_CHECKS
        .iter()
        .map(|(check, target)| status_series(check, target, "contoso"))
        .collect();
    eventually(
        Duration::from_secs(25),
        "every Graph check to be ok",
        || async {
            for one in &series {
                if daemon.metric(one).await != Some(0.0) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    sim.clear_requests();
    sim.inject(Fault {
        path_contains: "/v1.0/".into(),
        kind: FaultKind::TooManyRequests {
            retry_after_s: Some(RETRY_AFTER_S),
        },
        times: STORM,
    });
    let throttled_answers = || {
        sim.requests()
            .iter()
            .filter(|r| r.server == SimServer::Graph && r.status == 429)
            .count()
    };
    // Watch every verdict of the tenant through the storm: unknown, never critical.
    let mut seen_unknown = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while throttled_answers() < STORM {
        assert!(
            Instant::now() < deadline,
            "the storm never ended: {} of {STORM} 429s served",
            throttled_answers()
        );
        let (_, metrics) = daemon.get("/metrics").await;
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("tenantwatch_check_status{"))
        {
            assert!(
                !line.ends_with(" 2"),
                "a false critical in a 429 storm: {line}"
            );
        }
        for (one, check) in series.iter().zip(GRAPH_CHECKS) {
            if daemon.metric(one).await == Some(3.0) {
                seen_unknown.insert(check);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen_unknown.len() >= 3,
        "the storm should have turned most Graph checks unknown: {seen_unknown:?}"
    );

    eventually(
        Duration::from_secs(30),
        "every Graph check to be ok again after the storm",
        || async {
            for one in &series {
                if daemon.metric(one).await != Some(0.0) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    assert!(
        daemon
            .metric("tenantwatch_probe_runs_total{check=\"identity\",reason=\"throttled\",status=\"unknown\"}")
            .await
            .unwrap()
            >= 1.0
    );

    // Retry-After honoured: after a 429, the same request comes again no sooner than asked.
    let requests: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.server == SimServer::Graph)
        .collect();
    let mut retried = 0;
    for (i, throttled) in requests.iter().enumerate().filter(|(_, r)| r.status == 429) {
        let again = requests[i + 1..]
            .iter()
            .find(|r| r.path == throttled.path && r.query == throttled.query);
        if let Some(again) = again {
            let gap = again.at.duration_since(throttled.at);
            assert!(
                gap >= Duration::from_millis(RETRY_AFTER_S * 1000 - 50),
                "{}?{} asked again {gap:?} after a 429 with Retry-After: {RETRY_AFTER_S}",
                throttled.path,
                throttled.query
            );
            if gap < Duration::from_secs(RETRY_AFTER_S + 1) {
                retried += 1;
            }
        }
    }
    assert!(retried >= 1, "no request was retried after its Retry-After");
    // A transient fault never pages.
    assert!(sink.requests().is_empty(), "{:#?}", sink.requests());
    no_panic(&daemon);

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(6)).await;
    assert!(status.success(), "{status:?}");
    let store = Store::open(&daemon.db_path).await.unwrap();
    let history = store
        .observations(Some("contoso"), None, None, 1_000)
        .await
        .unwrap();
    assert!(
        history.iter().all(|o| o.status != Status::Critical),
        "{:#?}",
        history
            .iter()
            .filter(|o| o.status == Status::Critical)
            .collect::<Vec<_>>()
    );
    let throttled: Vec<_> = history
        .iter()
        .filter(|o| o.reason == tw_core::Reason::Throttled)
        .collect();
    assert!(!throttled.is_empty());
    assert!(throttled.iter().all(|o| o.status == Status::Unknown));
    assert!(
        throttled.iter().any(|o| matches!(&o.evidence, Evidence::Http(http)
            if http.exchanges.iter().any(|e| e.status == Some(429) && e.retry_after_s == Some(RETRY_AFTER_S)))),
        "the 429s and their Retry-After are in the evidence"
    );
    store.close().await;
}

/// Tenants watched in both configs of the reload test; the first one's first address vanishes
/// during the reloads.
const KEPT: [&str; 6] = ["t1", "t2", "t3", "t4", "t5", "t6"];
/// Watched only in config A, only in config B (the one left in place at the end).
const ONLY_A: [&str; 2] = ["t7", "t8"];
const ONLY_B: [&str; 2] = ["t9", "t10"];
/// SIGHUPs sent while probes run, alternating B and A, ending with B.
const RELOADS: usize = 12;

fn watched(tenant: &str) -> [String; 2] {
    [
        format!("admin@{tenant}.example"),
        format!("ops@{tenant}.example"),
    ]
}

/// The whole config file of the reload test: contoso plus `tenants`, with `repeat_interval`
/// so that the alerting config changes on each reload too.
fn burst_config(
    sims: &Sims,
    sink: &HttpSink,
    secret_file: &std::path::Path,
    db: &std::path::Path,
    tenants: &[&str],
    repeat_interval: &str,
) -> String {
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\npath = \"{}\"\n# Every observation is kept, so none can hide in downsampling.\nok_sample_interval = \"1s\"\n\n[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n{}\n[alerting]\nconfirm = 2\nrepeat_interval = \"{repeat_interval}\"\n\n[[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\nsecret_file = \"{}\"\n\n[[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [\"{ADMIN}\"]\n",
        db.display(),
        sims.config_sections(),
        sink.url(),
        secret_file.display(),
    );
    for tenant in tenants {
        let [first, second] = watched(tenant);
        config.push_str(&format!(
            "\n[[tenants]]\nname = \"{tenant}\"\ndomain = \"{tenant}.example\"\nwatch = [\"{first}\", \"{second}\"]\n"
        ));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_during_a_burst_of_probes_lose_nothing_and_page_once() {
    let dir = temp_dir();
    let all: Vec<&str> = KEPT.iter().chain(&ONLY_A).chain(&ONLY_B).copied().collect();
    let mut domains: Vec<String> = all.iter().map(|t| format!("{t}.example")).collect();
    domains.push("contoso.example".into());
    let domain_refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    let sims = Sims::start(dir.path(), &domain_refs).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    for tenant in &all {
        for address in watched(tenant) {
            sims.smtp.set_recipient(&address, RcptBehaviour::Accept);
        }
    }
    // Every reply comes late, so SMTP sessions overlap and reloads land in the middle of them.
    sims.smtp
        .set_fault(tw_sim::smtp::SmtpFault::Delay(Duration::from_millis(150)));
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, HOOK_SECRET).unwrap();
    let db_path = dir.path().join("tenantwatch.db");
    let config_path = dir.path().join("tenantwatch.toml");
    let config_a: Vec<&str> = KEPT.iter().chain(&ONLY_A).copied().collect();
    let config_b: Vec<&str> = KEPT.iter().chain(&ONLY_B).copied().collect();
    let text_a = burst_config(&sims, &sink, &secret_file, &db_path, &config_a, "4h");
    let text_b = burst_config(&sims, &sink, &secret_file, &db_path, &config_b, "5h");
    std::fs::write(&config_path, &text_a).unwrap();
    let args = vec![
        "run".into(),
        "--config".into(),
        config_path.clone().into_os_string(),
    ];
    let mut daemon = TestDaemon::start(args, config_path.clone(), db_path.clone()).await;

    eventually(
        Duration::from_secs(35),
        "the vanished admin to page once before the reloads",
        || async { (hook_requests(&sink).len() == 1).then_some(()) },
    )
    .await;

    let victim = watched("t1")[0].clone();
    sims.smtp
        .set_recipient(&victim, RcptBehaviour::RejectUnknown);
    let rcpts_before = sims.smtp.rcpt_log().len();
    for i in 0..RELOADS {
        let text = if i % 2 == 0 { &text_b } else { &text_a };
        std::fs::write(&config_path, text).unwrap();
        daemon.signal("HUP");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let during_reloads = sims.smtp.rcpt_log().len() - rcpts_before;
    assert!(
        during_reloads >= 5,
        "the reloads must land while probes run: {during_reloads} RCPTs meanwhile"
    );
    assert_eq!(
        RELOADS % 2,
        0,
        "the last reload must leave config B in place"
    );
    std::fs::write(&config_path, &text_b).unwrap();
    daemon.signal("HUP");
    let reloaded = eventually(
        Duration::from_secs(10),
        "the reloads to be applied",
        || async {
            daemon
                .metric("tenantwatch_config_reloads_total{result=\"success\"}")
                .await
                .filter(|n| *n >= 1.0)
        },
    )
    .await;
    assert!(reloaded <= (RELOADS + 1) as f64);
    assert_eq!(
        daemon
            .metric("tenantwatch_config_reloads_total{result=\"failure\"}")
            .await,
        Some(0.0)
    );

    // The new plan applies: B's tenants are probed, A's are gone from /metrics.
    eventually(
        Duration::from_secs(25),
        "config B's tenants to be probed and A's to be gone",
        || async {
            let (_, metrics) = daemon.get("/metrics").await;
            let present = |tenant: &str| metrics.contains(&format!("tenant=\"{tenant}\""));
            (ONLY_B.iter().all(|t| present(t)) && !ONLY_A.iter().any(|t| present(t))).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(35),
        "the address that vanished during the reloads to page",
        || async { (hook_requests(&sink).len() >= 2).then_some(()) },
    )
    .await;
    // Another interval and a half: nothing pages twice.
    tokio::time::sleep(Duration::from_secs(15)).await;
    no_panic(&daemon);
    assert!(daemon.exited().is_none());
    assert_eq!(
        daemon
            .metric("tenantwatch_store_dropped_observations_total")
            .await,
        Some(0.0)
    );
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(6)).await;
    assert!(status.success(), "{status:?}");

    let hooks = hook_requests(&sink);
    let mut paged: Vec<(String, String)> = hooks
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            (
                body["target"].as_str().unwrap().to_owned(),
                body["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    paged.sort();
    assert_eq!(
        paged,
        vec![
            (ADMIN.to_owned(), "firing".to_owned()),
            (victim.clone(), "firing".to_owned())
        ],
        "one page per vanished address, none twice"
    );

    // Every RCPT the server answered for a watched address is a stored observation.
    let store = Store::open(&db_path).await.unwrap();
    let rcpts = sims.smtp.rcpt_log();
    let mut checked = 0;
    for tenant in &all {
        for address in watched(tenant) {
            let asked = rcpts.iter().filter(|a| **a == address).count();
            let stored = store
                .observations(
                    Some(tenant),
                    Some(CheckKind::SmtpRcpt),
                    Some(&address),
                    1_000,
                )
                .await
                .unwrap()
                .len();
            assert!(
                stored >= asked,
                "{address}: {asked} RCPTs answered, {stored} observations stored"
            );
            checked += asked;
        }
    }
    assert!(checked >= 20, "too few runs to tell: {checked}");
    eprintln!("reloads applied: {reloaded}; RCPTs during the reloads: {during_reloads}; RCPTs checked against the store: {checked}");
    let victim_history = store
        .observations(Some("t1"), Some(CheckKind::SmtpRcpt), Some(&victim), 1_000)
        .await
        .unwrap();
    assert!(victim_history.iter().any(|o| o.status == Status::Critical));
    let outbox = store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 2, "{outbox:#?}");
    assert!(outbox.iter().all(|row| row.state == "sent"), "{outbox:#?}");
    store.close().await;
}
