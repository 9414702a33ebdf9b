//! `tenantwatch demo`: the simulator and the daemon in one process, for a first look.
//!
//! Two sample tenants (contoso.example, fabrikam.example) are served by the loopback DNS,
//! EOP-like SMTP and Entra ID / Graph / RDAP simulators; the daemon probes them through the
//! same config a user writes (generated into the demo directory). Fabrikam is not quite well:
//! its E3 SKU is in its grace period, it has a single Global Administrator and its domain
//! expires in 20 days. After `vanish_after`, admin@contoso.example is deleted: the MX rejects
//! it at RCPT and Graph finds it in deleted items, and /metrics shows both go critical.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tw_sim::dns::DnsSim;
use tw_sim::entra::{days_from_now, EntraSim, HealthyTenant, SimAdmin, SimRdap};
use tw_sim::sink::HttpSink;
use tw_sim::smtp::{RcptBehaviour, SmtpSim, SmtpSimConfig};
use tw_sim::tls::TestCa;

use crate::app::App;

pub(crate) const VANISHING: &str = "admin@contoso.example";
const WATCHED: [&str; 3] = [
    VANISHING,
    "breakglass@contoso.example",
    "it@fabrikam.example",
];
const CONTOSO_ID: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const FABRIKAM_ID: &str = "3e8b4d21-0000-4000-8000-0000000fab00";
const VANISHING_ID: &str = "87d349ed-0000-4000-8000-5f2406dee5bd";
/// The demo's app registration; its secret is generated per run and kept in the demo directory.
const DEMO_CLIENT_ID: &str = "de30a991-0000-4000-8000-000000000001";

pub(crate) async fn run(
    listen: SocketAddr,
    dir: &Path,
    vanish_after: Duration,
    interval: Duration,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let sims = CancellationToken::new();
    let ca = TestCa::generate().context("generating the simulator's CA")?;
    let tls = ca
        .server_config(&["*.mail.protection.outlook.com"])
        .context("issuing the simulator's certificate")?;
    let smtp = SmtpSim::start(
        SmtpSimConfig {
            banner_host: "AM5EUR02FT017.mail.protection.outlook.com".to_owned(),
            tls: Some(tls),
            accept_all: false,
        },
        sims.clone(),
    )
    .await
    .context("starting the SMTP simulator")?;
    let dns = DnsSim::start(sims.clone())
        .await
        .context("starting the DNS simulator")?;
    // Stands in for the webhook receiver, ntfy and Alertmanager, and logs what each gets.
    let sink = HttpSink::start(sims.clone())
        .await
        .context("starting the notification sink")?;
    for domain in ["contoso.example", "fabrikam.example"] {
        dns.add_microsoft_365_domain(domain);
    }
    for address in WATCHED {
        smtp.set_recipient(address, RcptBehaviour::Accept);
    }
    let entra = EntraSim::start(&ca, sims.clone())
        .await
        .context("starting the Entra ID / Graph / RDAP simulator")?;
    let client_secret = format!("demo-{:032x}", fastrand::u128(..));
    entra.add_healthy_tenant(&HealthyTenant {
        tenant_id: CONTOSO_ID,
        display_name: "Contoso",
        domains: &["contoso.example"],
        users: &[
            (VANISHING_ID, VANISHING),
            (
                "97d349ed-0000-4000-8000-5f2406dee5be",
                "breakglass@contoso.example",
            ),
        ],
        client_id: DEMO_CLIENT_ID,
        client_secret: &client_secret,
    });
    entra.add_healthy_tenant(&HealthyTenant {
        tenant_id: FABRIKAM_ID,
        display_name: "Fabrikam",
        domains: &["fabrikam.example"],
        users: &[(
            "a7d349ed-0000-4000-8000-5f2406dee5bf",
            "it@fabrikam.example",
        )],
        client_id: DEMO_CLIENT_ID,
        client_secret: &client_secret,
    });
    entra.set_sku_status(FABRIKAM_ID, "ENTERPRISEPACK", "Warning");
    entra.set_global_admins(
        FABRIKAM_ID,
        vec![SimAdmin::user(
            "6b000000-0000-4000-8000-000000000001",
            "Fabrikam Admin",
        )],
    );
    entra.set_rdap("fabrikam.example", SimRdap::expiring(&days_from_now(20)));
    let secret_path = dir.join("app-secret");
    write_private(&secret_path, &client_secret)?;

    let ca_path = dir.join("simulator-ca.pem");
    std::fs::write(&ca_path, &ca.ca_cert_pem)
        .with_context(|| format!("writing {}", ca_path.display()))?;
    let config_text = demo_config(&DemoSetup {
        listen,
        dir,
        ca: &ca_path,
        smtp: smtp.local_addr(),
        dns: dns.local_addr(),
        sink: &sink.url(),
        entra: &entra,
        secret: &secret_path,
        interval,
    });
    let config_path = dir.join("tenantwatch.toml");
    std::fs::write(&config_path, &config_text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let config = tw_core::config::parse(&config_text)
        .map_err(|errors| anyhow::anyhow!("demo config is invalid: {errors}"))?;

    tracing::info!(config = %config_path.display(), smtp = %smtp.local_addr(), dns = %dns.local_addr(), "Simulator running");
    let app = App::build(config, Some(config_path)).await?;
    tracing::info!(
        "Demo: watch http://{listen}/metrics (tenantwatch_check_status: 0 ok, 2 critical); {VANISHING} vanishes in {}; Ctrl-C stops",
        humantime::format_duration(vanish_after)
    );

    let shutdown = crate::shutdown_signal()?;
    let vanish = async {
        tokio::select! {
            _ = sims.cancelled() => {}
            _ = tokio::time::sleep(vanish_after) => {
                smtp.set_recipient(VANISHING, RcptBehaviour::RejectUnknown);
                entra.delete_user(CONTOSO_ID, VANISHING_ID);
                tracing::warn!(address = VANISHING, "Demo: the identity was deleted (RCPT now gets 550 5.4.1; Graph finds it in deleted items)");
            }
        }
    };
    let (_reload_tx, reloads) = mpsc::channel(1);
    let daemon = async {
        let result = app.run(shutdown, reloads).await;
        sims.cancel();
        result
    };
    let (result, ()) = tokio::join!(daemon, vanish);
    result
}

/// Where the demo's simulators listen and its files are.
struct DemoSetup<'a> {
    listen: SocketAddr,
    dir: &'a Path,
    ca: &'a Path,
    smtp: SocketAddr,
    dns: SocketAddr,
    sink: &'a str,
    entra: &'a EntraSim,
    secret: &'a Path,
    interval: Duration,
}

fn demo_config(setup: &DemoSetup<'_>) -> String {
    let DemoSetup {
        listen,
        dir,
        ca,
        smtp,
        dns,
        sink,
        entra,
        secret,
        interval,
    } = *setup;
    let interval = humantime::format_duration(interval);
    format!(
        r#"# Generated by `tenantwatch demo`: the simulator's tenants on loopback.
[server]
listen = "{listen}"

[store]
path = {db}

[schedule]
interval = "{interval}"
timeout = "5s"

[smtp]
helo_name = "probe.msp.example"
mail_from = "probe@msp.example"
port = {smtp_port}
extra_ca_file = {ca}

[dns]
nameservers = ["{dns}"]
timeout = "2s"

[entra]
login_url = "{login}"
graph_url = "{graph}"
rdap_bootstrap_url = "{rdap}"
extra_ca_file = {ca}

[app]
client_id = "{DEMO_CLIENT_ID}"
client_secret_file = {secret}

# These default to hours; the demo runs everything at its interval.
[checks.domain]
interval = "{interval}"
[checks.licence]
interval = "{interval}"
[checks.admins]
interval = "{interval}"
[checks.health]
interval = "{interval}"

[[tenants]]
name = "contoso"
domain = "contoso.example"
tenant_id = "{CONTOSO_ID}"
watch = ["admin@contoso.example", "breakglass@contoso.example"]

[[tenants]]
name = "fabrikam"
domain = "fabrikam.example"
tenant_id = "{FABRIKAM_ID}"
watch = ["it@fabrikam.example"]

# Three receivers, all served by the demo's local sink, which logs what it receives.
[alerting]
confirm = 2

[[receivers]]
name = "demo-webhook"
kind = "webhook"
url = "{sink}/webhook"

[[receivers]]
name = "demo-ntfy"
kind = "ntfy"
url = "{sink}/tenantwatch-demo"

[[receivers]]
name = "demo-alertmanager"
kind = "alertmanager"
url = "{sink}"
"#,
        db = toml_string(&dir.join("tenantwatch.db")),
        smtp_port = smtp.port(),
        ca = toml_string(ca),
        login = entra.login_url(),
        graph = entra.graph_url(),
        rdap = entra.rdap_bootstrap_url(),
        secret = toml_string(secret),
    )
}

/// Writes a credential readable by its owner only.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A path as a TOML basic string: JSON's escaping (quotes, backslashes, control characters
/// as `\uXXXX`) is valid TOML.
fn toml_string(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap_or_else(|_| "\"\"".to_owned())
}
