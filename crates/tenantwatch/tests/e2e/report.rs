//! `tenantwatch report` on a real incident: a watched identity vanishes from the simulated MX,
//! the daemon pages a webhook, the identity comes back, and the report built from the database
//! tells it all: first detection, confirmation, recovery, the SMTP transcript behind each, and
//! the two notifications with their delivery.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tw_sim::sink::HttpSink;
use tw_sim::smtp::RcptBehaviour;

use crate::support::{eventually, temp_dir, Sims, TestDaemon};

const ADMIN: &str = "admin@contoso.example";

async fn report(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantwatch"))
            .arg("report")
            .arg("--config")
            .arg(config)
            .args(args)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_and_restored_identity_is_reported_with_its_evidence_and_pages() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    let stop_sink = CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = HttpSink::start(stop_sink).await.unwrap();
    let config = format!(
        "[schedule]\ninterval = \"10s\"\ntimeout = \"4s\"\n\n{}\n[[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [\"{ADMIN}\"]\n[tenants.checks.dns]\nenabled = false\n\n[alerting]\nconfirm = 2\n\n[[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/hook\"\n",
        sims.config_sections(),
        sink.url()
    );
    let mut daemon = TestDaemon::spawn(dir.path(), &config).await;
    let admin = format!(
        "tenantwatch_check_status{{check=\"smtp_rcpt\",target=\"{ADMIN}\",tenant=\"contoso\"}}"
    );
    eventually(Duration::from_secs(15), "admin to be ok", || async {
        (daemon.metric(&admin).await == Some(0.0)).then_some(())
    })
    .await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);
    eventually(Duration::from_secs(35), "the firing page", || async {
        (sink.requests().len() == 1).then_some(())
    })
    .await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    eventually(Duration::from_secs(25), "the resolved page", || async {
        (sink.requests().len() == 2).then_some(())
    })
    .await;

    // Read while the daemon runs, as an operator would during an incident.
    let (code, stdout, stderr) = report(
        &daemon.config_path,
        &["--tenant", "contoso", "--since", "10m", "--format", "json"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["report_version"], 1);
    assert_eq!(json["tenant"], "contoso");
    assert_eq!(json["domains"], serde_json::json!(["contoso.example"]));
    let summary = &json["summary"];
    assert_eq!(summary["status"], "resolved", "{summary}");
    assert_eq!(
        summary["affected"].as_array().unwrap().len(),
        1,
        "{summary}"
    );
    let affected = &summary["affected"][0];
    assert_eq!(
        (
            affected["check"].as_str(),
            affected["target"].as_str(),
            affected["worst"].as_str()
        ),
        (Some("smtp_rcpt"), Some(ADMIN), Some("critical"))
    );
    assert_eq!(
        affected["reasons"],
        serde_json::json!(["recipient_not_found"])
    );
    assert!(
        affected["failing_observations"].as_u64().unwrap() >= 2,
        "{affected}"
    );
    assert_eq!(summary["first_seen"], affected["first_seen"]);
    assert_eq!(summary["recovered_at"], affected["recovered_at"]);
    let duration = summary["duration_s"].as_u64().unwrap();
    assert!((10..=40).contains(&duration), "{duration}");
    assert_eq!(summary["notifications_sent"], 2);

    let timeline = json["timeline"].as_array().unwrap();
    let events: Vec<&str> = timeline
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let position = |event: &str| {
        events
            .iter()
            .position(|e| *e == event)
            .unwrap_or_else(|| panic!("no {event} in {events:?}"))
    };
    assert!(position("detected") < position("confirmed"), "{events:?}");
    assert!(position("confirmed") < position("recovered"), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| **e == "notified").count(),
        2,
        "{events:?}"
    );
    let detected = &timeline[position("detected")];
    assert_eq!(detected["status"], "critical");
    assert_eq!(detected["evidence"]["kind"], "smtp_rcpt");
    let rcpt = detected["evidence"]["rcpt"].as_array().unwrap();
    let watched = rcpt.iter().find(|r| r["address"] == ADMIN).unwrap();
    assert_eq!(
        (watched["code"].as_u64(), watched["enhanced"].as_str()),
        (Some(550), Some("5.4.1"))
    );
    assert!(
        rcpt.iter().any(|r| r["control"] == true),
        "the control address is evidence too"
    );
    let transcript: Vec<&str> = detected["evidence"]["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert!(
        transcript.iter().any(|l| l.starts_with("550 5.4.1")),
        "{transcript:?}"
    );
    assert_eq!(
        timeline[position("recovered")]["reason"],
        "recipient_accepted"
    );
    let notifications = json["notifications"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = notifications
        .iter()
        .map(|n| (n["kind"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("firing", "sent"), ("resolved", "sent")]);
    assert!(notifications.iter().all(|n| n["delivered_at"].is_string()));

    let (code, markdown, stderr) = report(
        &daemon.config_path,
        &["--tenant", "contoso", "--since", "10m"],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        "# Incident evidence report: contoso",
        "**Resolved**",
        "## Timeline",
        "| detected | smtp\\_rcpt |",
        "## Evidence",
        "SMTP transcript:",
        "550 5.4.1 Recipient address rejected",
        "## Notifications sent",
    ] {
        assert!(
            markdown.contains(expected),
            "missing {expected:?} in:\n{markdown}"
        );
    }

    // A window before anything happened has no incident; nonsense is refused.
    let (code, quiet, _) = report(
        &daemon.config_path,
        &[
            "--tenant",
            "contoso",
            "--since",
            "2020-01-01",
            "--until",
            "2020-01-02",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&quiet).unwrap()["summary"]["status"],
        "none"
    );
    let (code, _, stderr) = report(
        &daemon.config_path,
        &["--tenant", "nobody", "--since", "1h"],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no tenant named \"nobody\""), "{stderr}");
    let (code, _, _) = report(
        &daemon.config_path,
        &["--tenant", "contoso", "--since", "1h", "--until", "2h"],
    )
    .await;
    assert_eq!(code, Some(2), "since after until");
    let (code, _, _) = report(
        &daemon.config_path,
        &["--tenant", "contoso", "--since", "soon"],
    )
    .await;
    assert_eq!(code, Some(2), "clap refuses an unreadable time");

    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(6)).await.success());
}
