//! `tenantwatch probe` with the Entra ID, Graph and RDAP checks against the simulator: the
//! healthy tenant, then the tenant with every kind of trouble the simulator can stage, then a
//! token endpoint that refuses the app. The app secret comes from the environment (as with a
//! systemd `Environment=`/credential), and neither stdout nor the debug log shows it.

use std::process::Command;

use tokio_util::sync::CancellationToken;
use tw_sim::entra::{days_from_now, EntraSim, HealthyTenant, SimAdmin, SimRdap};
use tw_sim::tls::TestCa;

use crate::support::temp_dir;

const TENANT_ID: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const OTHER_TENANT_ID: &str = "99999999-0000-4000-8000-0000000000ff";
const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const SECRET: &str = "e2e-canary-secret-7Yq~Do-not-log";
const ADMIN_ID: &str = "87d349ed-0000-4000-8000-5f2406dee5bd";
const ADMIN: &str = "admin@contoso.example";
const IT: &str = "it@contoso.example";

/// (check, target, status, reason) of one `probe --json` row.
type Row = (String, String, String, String);

/// Runs `tenantwatch probe --json` with the secret in the environment and debug logging;
/// returns the exit code, the rows as (check, target) → (status, reason), and all output.
fn probe(config: &str) -> (i32, Vec<Row>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tenantwatch"))
        .args(["probe", "--config", config, "--tenant", "contoso", "--json"])
        .env("TW_E2E_APP_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let rows: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("{err}: stdout {stdout}\nstderr {stderr}"));
    let rows = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let field = |name: &str| row[name].as_str().unwrap().to_owned();
            (
                field("check"),
                field("target"),
                field("status"),
                field("reason"),
            )
        })
        .collect();
    (
        output.status.code().unwrap_or(-1),
        rows,
        format!("{stdout}\n{stderr}"),
    )
}

fn verdict<'a>(rows: &'a [Row], check: &str, target: &str) -> (&'a str, &'a str) {
    rows.iter()
        .find(|row| row.0 == check && row.1 == target)
        .map(|row| (row.2.as_str(), row.3.as_str()))
        .unwrap_or_else(|| panic!("no {check} row for {target} in {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_shows_each_entra_check_with_the_right_verdict_and_never_the_secret() {
    let dir = temp_dir();
    let ca = TestCa::generate().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let sim = EntraSim::start(&ca, stop).await.unwrap();
    sim.add_healthy_tenant(&HealthyTenant {
        tenant_id: TENANT_ID,
        display_name: "Contoso",
        domains: &["contoso.example"],
        users: &[
            (ADMIN_ID, ADMIN),
            ("97d349ed-0000-4000-8000-5f2406dee5be", IT),
        ],
        client_id: CLIENT_ID,
        client_secret: SECRET,
    });
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.ca_cert_pem).unwrap();
    let config_path = dir.path().join("tenantwatch.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[smtp]
helo_name = "probe.msp.example"
mail_from = "probe@msp.example"

{entra}
[app]
client_id = "{CLIENT_ID}"
client_secret_env = "TW_E2E_APP_SECRET"

[checks.dns]
enabled = false
[checks.smtp_rcpt]
enabled = false

[[tenants]]
name = "contoso"
domain = "contoso.example"
tenant_id = "{TENANT_ID}"
watch = ["{ADMIN}", "{IT}"]
"#,
            entra = sim.config_section(&ca_path),
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap().to_owned();
    let run = |config: String| async move {
        tokio::task::spawn_blocking(move || probe(&config))
            .await
            .unwrap()
    };

    // Healthy: every check ok, exit 0.
    let (code, rows, output) = run(config.clone()).await;
    assert_eq!(code, 0, "{rows:?}");
    assert_eq!(rows.len(), 12, "{rows:?}");
    assert!(rows.iter().all(|row| row.2 == "ok"), "{rows:?}");
    assert!(
        !output.contains(SECRET),
        "the secret leaked into the output"
    );

    // Trouble everywhere the simulator can stage it.
    sim.delete_user(TENANT_ID, ADMIN_ID);
    sim.set_sku_status(TENANT_ID, "ENTERPRISEPACK", "Suspended");
    sim.set_global_admins(
        TENANT_ID,
        vec![SimAdmin::user(
            "6a000000-0000-4000-8000-000000000009",
            "Last Admin",
        )],
    );
    sim.set_rdap("contoso.example", SimRdap::expiring(&days_from_now(3)));
    sim.set_namespace_type("contoso.example", "Federated");
    sim.set_service_health(TENANT_ID, "Exchange", "serviceDegradation");
    let (code, rows, output) = run(config.clone()).await;
    assert_eq!(code, 2, "{rows:?}");
    for (check, target, status, reason) in [
        ("identity", ADMIN, "critical", "identity_deleted"),
        ("identity", IT, "ok", "identity_ok"),
        ("licence", "contoso", "critical", "licence_suspended"),
        ("admins", "contoso", "warning", "single_admin"),
        (
            "domain",
            "contoso.example",
            "critical",
            "registration_expiring_soon",
        ),
        // A one-shot probe has no previous namespace type to call a change; Federated is fine.
        ("realm", ADMIN, "ok", "realm_ok"),
        ("health", "contoso", "ok", "service_issue_reported"),
        ("tenant", "contoso.example", "ok", "tenant_known"),
        ("signin", "contoso", "ok", "token_issued"),
    ] {
        assert_eq!(
            verdict(&rows, check, target),
            (status, reason),
            "{check} {target}"
        );
    }
    assert!(!output.contains(SECRET));

    // The domain moves to another tenant; the app loses its consent.
    sim.add_tenant(tw_sim::entra::SimTenant::managed(
        OTHER_TENANT_ID,
        "Other",
        &[],
    ));
    sim.move_domain("contoso.example", OTHER_TENANT_ID);
    sim.set_token_error(TENANT_ID, Some(7000222));
    let (code, rows, output) = run(config.clone()).await;
    assert_eq!(code, 2, "{rows:?}");
    assert_eq!(
        verdict(&rows, "tenant", "contoso.example"),
        ("critical", "tenant_moved")
    );
    assert_eq!(
        verdict(&rows, "signin", "contoso"),
        ("critical", "credential_expired")
    );
    for (check, target) in [
        ("identity", ADMIN),
        ("licence", "contoso"),
        ("admins", "contoso"),
        ("health", "contoso"),
    ] {
        assert_eq!(
            verdict(&rows, check, target),
            ("unknown", "no_token"),
            "{check}"
        );
    }
    assert!(!output.contains(SECRET));
}
