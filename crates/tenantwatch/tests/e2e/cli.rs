//! The one-shot commands: `check-config` and `probe` exit codes and output.

use std::process::Command;

use tw_sim::smtp::RcptBehaviour;

use crate::support::{temp_dir, Sims};

fn tenantwatch(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tenantwatch"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_example_and_lists_every_problem_of_a_bad_one() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/tenantwatch.example.toml"
    );
    let (code, stdout, _) = tenantwatch(&["check-config", example]);
    assert_eq!(code, 0);
    assert!(stdout.contains("valid (2 tenants"), "{stdout}");

    let dir = temp_dir();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[smtp]\nhelo_name = \"probe.msp.example\"\nmail_from = \"nope\"\n[[tenants]]\nname = \"a\"\ndomain = \"a\"\n",
    )
    .unwrap();
    let (code, _, stderr) = tenantwatch(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("2 problems in config"), "{stderr}");
    assert!(stderr.contains("smtp.mail_from (line 3)"), "{stderr}");
    assert!(stderr.contains("tenants[0].domain (line 6)"), "{stderr}");

    let (code, _, stderr) = tenantwatch(&["check-config", "/nonexistent/tenantwatch.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_each_verdict_and_exits_like_a_nagios_plugin() {
    let dir = temp_dir();
    let sims = Sims::start(dir.path(), &["contoso.example"]).await;
    sims.smtp
        .set_recipient("admin@contoso.example", RcptBehaviour::Accept);
    let config = dir.path().join("tenantwatch.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[tenants]]\nname = \"contoso\"\ndomain = \"contoso.example\"\nwatch = [\"admin@contoso.example\", \"gone@contoso.example\"]\n",
            sims.config_sections()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();

    let ok = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            tenantwatch(&[
                "probe", "--config", &config, "--tenant", "contoso", "--check", "dns",
            ])
        })
        .await
        .unwrap()
    };
    assert_eq!(ok.0, 0, "{ok:?}");
    assert!(ok.1.contains("dns_records_ok"), "{}", ok.1);

    let mixed = tokio::task::spawn_blocking(move || {
        tenantwatch(&[
            "probe", "--config", &config, "--tenant", "contoso", "--json",
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        mixed.0, 2,
        "a gone address makes the run critical: {mixed:?}"
    );
    let rows: serde_json::Value = serde_json::from_str(&mixed.1).unwrap();
    let verdict = |target: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|row| row["target"] == target)
            .map(|row| {
                (
                    row["status"].as_str().unwrap().to_owned(),
                    row["reason"].as_str().unwrap().to_owned(),
                )
            })
            .unwrap()
    };
    assert_eq!(
        verdict("admin@contoso.example"),
        ("ok".into(), "recipient_accepted".into())
    );
    assert_eq!(
        verdict("gone@contoso.example"),
        ("critical".into(), "recipient_not_found".into())
    );
    assert_eq!(
        verdict("contoso.example"),
        ("ok".into(), "dns_records_ok".into())
    );

    let (code, _, stderr) =
        tenantwatch(&["probe", "--config", "/nonexistent.toml", "--tenant", "x"]);
    assert_eq!(code, 2, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_reaches_the_receiver_or_says_why_not() {
    let dir = temp_dir();
    let stop_sink = tokio_util::sync::CancellationToken::new();
    let _stop = stop_sink.clone().drop_guard();
    let sink = tw_sim::sink::HttpSink::start(stop_sink).await.unwrap();
    let config = dir.path().join("tenantwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[smtp]\nhelo_name = \"probe.msp.example\"\nmail_from = \"probe@msp.example\"\n[[receivers]]\nname = \"noc\"\nkind = \"webhook\"\nurl = \"{}/noc\"\n",
            sink.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            tenantwatch(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };

    let (code, stdout, stderr) = run(vec![
        "notify".into(),
        "test".into(),
        "noc".into(),
        "--config".into(),
        config.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "sent to noc (webhook)");
    let request = &sink.requests()[0];
    assert_eq!(request.path, "/noc");
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["kind"], "test");

    sink.set_status(503);
    let (code, _, stderr) = run(vec![
        "notify".into(),
        "test".into(),
        "noc".into(),
        "--config".into(),
        config.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not delivered to noc (webhook): transient"),
        "{stderr}"
    );

    let (code, _, stderr) = run(vec![
        "notify".into(),
        "test".into(),
        "pager".into(),
        "--config".into(),
        config,
    ])
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no receiver named \"pager\" (configured: noc)"),
        "{stderr}"
    );
}
