//! Alerting decided while the daemon runs, through the real binary: an acknowledgement from
//! the CLI stops the repeats, a silence added by the CLI holds an alert back until it is
//! removed, a receiver that keeps failing hands the message to the next one of its route,
//! an unacknowledged critical alert escalates once (not again after a restart) and its
//! resolution reaches the escalation receiver, and two identities of one tenant vanishing in
//! the same run arrive as one message.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tw_sim::sink::{CapturedRequest, HttpSink};
use tw_sim::smtp::RcptBehaviour;
use tw_store::Store;

use crate::support::{eventually, temp_dir, Sims, TestDaemon};

const ADMIN: &str = "admin@contoso.example";
const SALES: &str = "sales@contoso.example";

/// One tenant, SMTP checks only, every 10 s, with `alerting` (keys of `[alerting]`) and
/// `rest` (receivers, routes) appended.
fn config(sims: &Sims, watch: &[&str], alerting: &str, rest: &str) -> String {
    let watch = watch
        .iter()
        .map(|address| format!("\"{address}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n{}\n[[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [{watch}]\n[tenants.checks.dns]\nenabled = false\n\n[alerting]\n{alerting}\n{rest}",
        sims.config_sections()
    )
}

fn webhook(name: &str, url: &str) -> String {
    format!("[[receivers]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\n")
}

fn at(sink: &HttpSink, path: &str) -> Vec<CapturedRequest> {
    sink.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

fn body(request: &CapturedRequest) -> serde_json::Value {
    serde_json::from_str(&request.body).unwrap()
}

fn kinds(requests: &[CapturedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| body(r)["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs `tenantwatch ARGS… --config CONFIG` to completion: (exit code, stdout, stderr).
async fn cli(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantwatch"))
            .args(&args)
            .arg("--config")
            .arg(config)
            .env("USER", "e2e-operator")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn logged(daemon: &TestDaemon, all: &[&str]) -> bool {
    daemon
        .logs()
        .iter()
        .any(|line| all.iter().all(|part| line.contains(part)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_from_the_cli_stops_repeats_until_the_alert_resolves() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let hook = format!("{}/hook", sink.url());
    let mut daemon = TestDaemon::spawn(
        dir.path(),
        &config(
            &sims,
            &[ADMIN],
            "confirm = 1\nrepeat_interval = \"5s\"\n",
            &webhook("hook", &hook),
        ),
    )
    .await;

    // Unacknowledged, it fires and repeats on the next run.
    eventually(Duration::from_secs(40), "a firing and a repeat", || async {
        (kinds(&at(&sink, "/hook")) == ["firing", "repeat"]).then_some(())
    })
    .await;

    let (code, out, err) = cli(
        &daemon.config_path,
        &[
            "ack",
            "--tenant",
            "contoso",
            "--check",
            "smtp_rcpt",
            "--target",
            ADMIN,
            "--comment",
            "ticket 4711",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(
            "acknowledged contoso smtp_rcpt admin@contoso.example (episode 1) as e2e-operator"
        ),
        "{out}"
    );
    eventually(
        Duration::from_secs(10),
        "the daemon to read the acknowledgement",
        || async {
            logged(
                &daemon,
                &["Alert acknowledged", "e2e-operator", "ticket 4711"],
            )
            .then_some(())
        },
    )
    .await;
    let before = at(&sink, "/hook").len();
    // Two more runs, each of which would repeat (repeat_interval 5 s).
    eventually(Duration::from_secs(30), "two repeats held back", || async {
        (daemon
            .logs()
            .iter()
            .filter(|line| line.contains("Repeat held back: the alert is acknowledged"))
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    assert_eq!(at(&sink, "/hook").len(), before, "{:#?}", sink.requests());

    // A second ack of the same episode is accepted and changes nothing.
    let (code, out, _) = cli(
        &daemon.config_path,
        &[
            "ack",
            "--tenant",
            "contoso",
            "--check",
            "smtp_rcpt",
            "--target",
            ADMIN,
        ],
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("already acknowledged by e2e-operator"),
        "{out}"
    );
    let (code, listing, _) = cli(&daemon.config_path, &["alerts"]).await;
    assert_eq!(code, Some(2));
    assert!(
        listing.contains("acknowledged by e2e-operator"),
        "{listing}"
    );

    // The resolution is still sent.
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    eventually(Duration::from_secs(25), "the resolved message", || async {
        (kinds(&at(&sink, "/hook")).last().map(String::as_str) == Some("resolved")).then_some(())
    })
    .await;
    assert_eq!(at(&sink, "/hook").len(), before + 1);

    // Nothing firing any more: nothing to acknowledge.
    let (code, _, err) = cli(
        &daemon.config_path,
        &[
            "ack",
            "--tenant",
            "contoso",
            "--check",
            "smtp_rcpt",
            "--target",
            ADMIN,
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("not firing"), "{err}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_added_by_the_cli_holds_an_alert_back_until_it_is_removed() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let hook = format!("{}/hook", sink.url());
    let mut daemon = TestDaemon::spawn(
        dir.path(),
        &config(
            &sims,
            &[ADMIN],
            "confirm = 1\nrepeat_interval = \"5s\"\n",
            &webhook("hook", &hook),
        ),
    )
    .await;

    // Set while the daemon runs, from another process.
    let (code, out, err) = cli(
        &daemon.config_path,
        &[
            "silence",
            "add",
            "--tenant",
            "contoso",
            "--check",
            "smtp_rcpt",
            "--duration",
            "1h",
            "--reason",
            "mailbox migration",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let id: i64 = out
        .strip_prefix("silence ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id in {out:?}"));
    let (code, listing, _) = cli(&daemon.config_path, &["silence", "list"]).await;
    assert_eq!(code, Some(0));
    assert!(
        listing.contains("contoso smtp_rcpt *")
            && listing.contains("[active]")
            && listing.contains("mailbox migration")
            && listing.contains("by e2e-operator"),
        "{listing}"
    );
    // Let the daemon read it before anything fires.
    tokio::time::sleep(Duration::from_secs(4)).await;

    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    eventually(
        Duration::from_secs(30),
        "the alert to fire, held back by the silence",
        || async {
            logged(
                &daemon,
                &[
                    "Alert silenced by a run-time silence",
                    "mailbox migration",
                    "\"kind\":\"firing\"",
                ],
            )
            .then_some(())
        },
    )
    .await;
    let admin = format!(
        "tenantwatch_check_status{{check=\"smtp_rcpt\",target=\"{ADMIN}\",tenant=\"contoso\"}}"
    );
    assert_eq!(
        daemon.metric(&admin).await,
        Some(2.0),
        "the verdict still shows"
    );
    assert!(sink.requests().is_empty(), "{:#?}", sink.requests());

    let (code, out, err) = cli(&daemon.config_path, &["silence", "remove", &id.to_string()]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    // The alert is still firing: its next repeat goes out.
    eventually(
        Duration::from_secs(30),
        "the repeat after the silence is removed",
        || async { (kinds(&at(&sink, "/hook")) == ["repeat"]).then_some(()) },
    )
    .await;
    let (_, listing, _) = cli(&daemon.config_path, &["silence", "list"]).await;
    assert_eq!(listing.trim(), "no silences");
    let (_, all, _) = cli(&daemon.config_path, &["silence", "list", "--all"]).await;
    assert!(all.contains("removed by e2e-operator"), "{all}");
    let (code, _, err) = cli(&daemon.config_path, &["silence", "remove", "999"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("no silence with id 999"), "{err}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_hands_the_message_to_the_next_one() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let stop_sinks = CancellationToken::new();
    let _stop = stop_sinks.clone().drop_guard();
    let down = HttpSink::start(stop_sinks.clone()).await.unwrap();
    down.set_status(503);
    let up = HttpSink::start(stop_sinks).await.unwrap();
    let receivers = format!(
        "{}{}[[routes]]\nreceivers = [\"signal\", \"sms\"]\nfallback = true\nfallback_attempts = 2\n",
        webhook("signal", &format!("{}/v2/send", down.url())),
        webhook("sms", &format!("{}/sms", up.url())),
    );
    let mut daemon = TestDaemon::spawn(
        dir.path(),
        &config(&sims, &[ADMIN], "confirm = 1\n", &receivers),
    )
    .await;

    eventually(
        Duration::from_secs(40),
        "the message at the fallback receiver",
        || async { (at(&up, "/sms").len() == 1).then_some(()) },
    )
    .await;
    let tried = at(&down, "/v2/send");
    assert_eq!(tried.len(), 2, "two failed attempts, then the hand-over");
    let delivered = &at(&up, "/sms")[0];
    let id = body(delivered)["id"].as_str().unwrap().to_owned();
    assert_eq!(body(delivered)["kind"], "firing");
    for request in tried.iter().chain(std::iter::once(delivered)) {
        assert_eq!(request.header("idempotency-key"), Some(id.as_str()));
    }
    eventually(
        Duration::from_secs(10),
        "the fallback to be counted",
        || async {
            (daemon
                .metric("tenantwatch_notifications_total{receiver=\"signal\",result=\"fallback\"}")
                .await
                == Some(1.0))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        daemon
            .metric("tenantwatch_notifications_total{receiver=\"signal\",result=\"transient\"}")
            .await,
        Some(2.0)
    );
    assert!(logged(
        &daemon,
        &["falling back to the next receiver", "\"to\":\"sms\""]
    ));
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());

    let store = Store::open(&daemon.db_path).await.unwrap();
    let outbox = store.outbox().await.unwrap();
    assert_eq!(
        outbox
            .iter()
            .map(|r| (r.receiver.as_str(), r.state.as_str()))
            .collect::<Vec<_>>(),
        [("signal", "fallback"), ("sms", "sent")]
    );
    assert_eq!(outbox[1].fallback_from, Some(outbox[0].id));
    assert!(outbox[0]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("handed on to sms")));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_critical_alert_escalates_once_even_across_a_restart() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let receivers = format!(
        "{}{}[[routes]]\nreceivers = [\"hook\"]\nescalate_after = \"6s\"\nescalate_to = [\"sms\"]\n",
        webhook("hook", &format!("{}/hook", sink.url())),
        webhook("sms", &format!("{}/sms", sink.url())),
    );
    let mut daemon = TestDaemon::spawn(
        dir.path(),
        &config(&sims, &[ADMIN], "confirm = 1\n", &receivers),
    )
    .await;

    eventually(Duration::from_secs(30), "the page", || async {
        (at(&sink, "/hook").len() == 1).then_some(())
    })
    .await;
    let paged = tokio::time::Instant::now();
    assert!(
        at(&sink, "/sms").is_empty(),
        "the sms receiver is not routed directly"
    );
    eventually(Duration::from_secs(20), "the escalation", || async {
        (at(&sink, "/sms").len() == 1).then_some(())
    })
    .await;
    // Not before escalate_after (6 s from the page; the page reached the sink a little after
    // it was decided), within one refresh (3 s) and a delivery after it.
    let waited = paged.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited <= Duration::from_secs(12),
        "escalated after {waited:?}"
    );
    let escalation = body(&at(&sink, "/sms")[0]);
    assert_eq!(escalation["kind"], "escalation");
    assert_eq!(
        escalation["id"],
        "contoso/smtp_rcpt/admin@contoso.example/1/escalation"
    );
    assert!(
        escalation["title"]
            .as_str()
            .unwrap()
            .starts_with("ESCALATED (not acknowledged within 6s)"),
        "{escalation}"
    );
    assert_eq!(
        daemon
            .metric("tenantwatch_alert_events_total{kind=\"escalation\",severity=\"critical\"}")
            .await,
        Some(1.0)
    );

    // A restart knows the episode was escalated: no second escalation.
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
    let args = vec![
        "run".into(),
        "--config".into(),
        daemon.config_path.clone().into_os_string(),
    ];
    let mut restarted =
        TestDaemon::start(args, daemon.config_path.clone(), daemon.db_path.clone()).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(at(&sink, "/sms").len(), 1, "{:#?}", sink.requests());
    assert_eq!(at(&sink, "/hook").len(), 1, "{:#?}", sink.requests());

    // The resolution reaches the page's receiver and the escalation's.
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    eventually(
        Duration::from_secs(25),
        "both resolved messages",
        || async {
            (kinds(&at(&sink, "/hook")) == ["firing", "resolved"]
                && kinds(&at(&sink, "/sms")) == ["escalation", "resolved"])
            .then_some(())
        },
    )
    .await;
    restarted.signal("TERM");
    assert!(restarted.wait_exit(Duration::from_secs(6)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identities_of_one_tenant_vanishing_in_one_run_arrive_as_one_message() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    sims.smtp.set_recipient(SALES, RcptBehaviour::RejectUnknown);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let mut daemon = TestDaemon::spawn(
        dir.path(),
        // confirm = 2: whether the run's two verdicts reach the recorder in one batch or
        // two, when the first confirms the other is pending, so either way they group.
        &config(
            &sims,
            &[ADMIN, SALES],
            "confirm = 2\ngroup_window = \"20s\"\n",
            &webhook("hook", &format!("{}/hook", sink.url())),
        ),
    )
    .await;
    eventually(Duration::from_secs(60), "the grouped message", || async {
        (!at(&sink, "/hook").is_empty()).then_some(())
    })
    .await;
    // Both fired in the same run: nothing else follows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hooks = at(&sink, "/hook");
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    let message = body(&hooks[0]);
    assert_eq!(message["kind"], "group");
    assert_eq!(message["title"], "CRITICAL: contoso: 2 alerts");
    let mut targets: Vec<&str> = message["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| alert["target"].as_str().unwrap())
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, [ADMIN, SALES]);
    assert_eq!(hooks[0].header("idempotency-key"), message["id"].as_str());
    assert_eq!(
        daemon
            .metric("tenantwatch_notifications_total{receiver=\"hook\",result=\"sent\"}")
            .await,
        Some(2.0),
        "counted per notification"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
}
