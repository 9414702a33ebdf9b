//! The loopback simulators on a runtime of their own, and the tenantwatch config that points
//! the daemon at them: DNS and SMTP always, and with `--checks all` the Entra ID / Graph /
//! RDAP simulator with every tenant healthy and the MSP's app registered in it.
//!
//! The simulators run on worker threads named `tw-sim-*`, so their CPU time can be read per
//! thread and reported apart from the benchmark's own scraping.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tw_sim::dns::DnsSim;
use tw_sim::entra::{EntraSim, HealthyTenant};
use tw_sim::smtp::{RcptBehaviour, SmtpSim, SmtpSimConfig};
use tw_sim::tls::TestCa;

/// Thread-name prefix of the simulators' runtime.
pub(crate) const THREAD_PREFIX: &str = "tw-sim";

/// Which checks the generated config runs for every tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CheckSet {
    /// `dns` and `smtp_rcpt`: what blackbox_exporter can do too, for the side-by-side run.
    Mail,
    /// Every check of the catalogue but `mailflow`: `dns`, `smtp_rcpt`, `tenant`, `domain`,
    /// `realm`, `identity`, `signin`, `licence`, `admins`, `health`: ten jobs and eleven targets
    /// per tenant with one domain and one watched address (`licence` reports on the tenant's
    /// subscriptions and on the watched identity's mailbox plan), all at `--interval` (the daemon's defaults run
    /// `domain`, `licence`, `admins` and `health` less often). `mailflow` sends real mail through a relay and
    /// is configured per mailbox, not per tenant; the harness has no relay and IMAP server.
    All,
}

impl CheckSet {
    /// Targets per tenant (one domain, one watched address), which is also observations per
    /// tenant per interval: `all` runs ten jobs, and the `licence` job reports on two targets
    /// (the tenant's subscriptions and the watched identity's mailbox plan).
    pub(crate) fn targets_per_tenant(self) -> usize {
        match self {
            CheckSet::Mail => 2,
            CheckSet::All => 11,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckSet::Mail => "mail",
            CheckSet::All => "all",
        }
    }
}

/// The MSP's multi-tenant app as the Entra simulator knows it.
pub(crate) const CLIENT_ID: &str = "0f1e2d3c-4b5a-4697-8877-665544332211";

/// Tenant `index`'s Entra tenant id and the object id of its watched user.
pub(crate) fn tenant_ids(index: usize) -> (String, String) {
    (
        format!("7e000000-0000-4000-8000-{index:012}"),
        format!("0b000000-0000-4000-8000-{index:012}"),
    )
}

/// Tenant `index`'s name, domain and watched address.
pub(crate) fn tenant(index: usize) -> (String, String, String) {
    let name = format!("t{index:05}");
    let domain = format!("{name}.example");
    let watched = format!("probe@{domain}");
    (name, domain, watched)
}

/// The MX host `DnsSim::add_microsoft_365_domain` publishes for `domain`.
pub(crate) fn mx_host(domain: &str) -> String {
    format!("{}.mail.protection.outlook.com", domain.replace('.', "-"))
}

pub(crate) struct Sims {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    pub(crate) smtp: SocketAddr,
    pub(crate) dns: SocketAddr,
    pub(crate) ca_pem: String,
    /// With `CheckSet::All`: the simulator's `[entra]` section needs the CA file's path,
    /// so the simulator itself is kept, with the app's client secret.
    pub(crate) entra: Option<(EntraSim, String)>,
}

impl Sims {
    /// Starts both simulators with `tenants` Microsoft 365 domains, each with its watched
    /// address accepted at RCPT (every other address gets the DBEB rejection, so
    /// tenantwatch's control address is rejected and its verdict is `ok`); with
    /// `CheckSet::All` also the Entra simulator with every tenant healthy
    /// (`EntraSim::add_healthy_tenant`: app registered, user licensed, two admins, domain
    /// registered for a year).
    pub(crate) fn start(tenants: usize, threads: usize, checks: CheckSet) -> anyhow::Result<Sims> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(format!("{THREAD_PREFIX}-worker"))
            .enable_all()
            .build()
            .context("starting the simulators' runtime")?;
        let shutdown = CancellationToken::new();
        let (smtp, dns, ca_pem, entra) = runtime.block_on(async {
            let ca = TestCa::generate().context("generating the simulator CA")?;
            let tls = ca
                .server_config(&["*.mail.protection.outlook.com"])
                .context("issuing the simulator certificate")?;
            let smtp = SmtpSim::start(
                SmtpSimConfig {
                    banner_host: "AM5EUR02FT017.mail.protection.outlook.com".to_owned(),
                    tls: Some(tls),
                    accept_all: false,
                },
                shutdown.clone(),
            )
            .await
            .context("starting the SMTP simulator")?;
            let dns = DnsSim::start(shutdown.clone())
                .await
                .context("starting the DNS simulator")?;
            for index in 0..tenants {
                let (_, domain, watched) = tenant(index);
                dns.add_microsoft_365_domain(&domain);
                smtp.set_recipient(&watched, RcptBehaviour::Accept);
            }
            let entra = match checks {
                CheckSet::Mail => None,
                CheckSet::All => {
                    let entra = EntraSim::start(&ca, shutdown.clone())
                        .await
                        .context("starting the Entra ID / Graph / RDAP simulator")?;
                    // The request log is for tests; a benchmark would only fill memory.
                    entra.set_request_log(false);
                    let secret = format!("bench-{:032x}", fastrand::u128(..));
                    for index in 0..tenants {
                        let (_, domain, watched) = tenant(index);
                        let (tenant_id, user_id) = tenant_ids(index);
                        entra.add_healthy_tenant(&HealthyTenant {
                            tenant_id: &tenant_id,
                            display_name: &domain,
                            domains: &[&domain],
                            users: &[(&user_id, &watched)],
                            client_id: CLIENT_ID,
                            client_secret: &secret,
                        });
                    }
                    Some((entra, secret))
                }
            };
            anyhow::Ok((
                smtp.local_addr(),
                dns.local_addr(),
                ca.ca_cert_pem.clone(),
                entra,
            ))
        })?;
        Ok(Sims {
            runtime: Some(runtime),
            shutdown,
            smtp,
            dns,
            ca_pem,
            entra,
        })
    }

    /// Stops the simulators; must be called outside any async context.
    pub(crate) fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// What the generated config asks of tenantwatch.
pub(crate) struct ConfigSpec<'a> {
    pub(crate) tenants: usize,
    pub(crate) interval: Duration,
    pub(crate) ok_sample_interval: Option<Duration>,
    pub(crate) db: &'a Path,
    pub(crate) ca_file: &'a Path,
    pub(crate) smtp: SocketAddr,
    pub(crate) dns: SocketAddr,
    /// With `CheckSet::All`: the simulator's `[entra]` section (`EntraSim::config_section`)
    /// and the file holding the app's client secret.
    pub(crate) entra: Option<(String, &'a Path)>,
}

/// N tenants, each with one domain and one watched address. Without `entra`, each runs the
/// `dns` and the `smtp_rcpt` check (two jobs per interval); with it, each also has its Entra
/// tenant id and the app, so every check but `mailflow` runs (eleven targets, see `CheckSet::All`).
/// Everything else is default; the listener takes a free loopback port, which the daemon logs.
pub(crate) fn config(spec: &ConfigSpec<'_>) -> String {
    let mut text = String::with_capacity(spec.tenants * 96 + 1024);
    let _ = write!(
        text,
        r#"# Generated by tw-bench: {tenants} tenants x {jobs} checks against the loopback simulators.
[server]
listen = "127.0.0.1:0"

[store]
path = {db}
"#,
        tenants = spec.tenants,
        jobs = if spec.entra.is_some() { 11 } else { 2 },
        db = toml_string(spec.db),
    );
    if let Some(every) = spec.ok_sample_interval {
        let _ = writeln!(
            text,
            "ok_sample_interval = \"{}\"",
            humantime::format_duration(every)
        );
    }
    let _ = write!(
        text,
        r#"
[schedule]
interval = "{interval}"

[smtp]
helo_name = "probe.msp.example"
mail_from = "probe@msp.example"
port = {smtp_port}
extra_ca_file = {ca}

[dns]
nameservers = ["{dns}"]
"#,
        interval = humantime::format_duration(spec.interval),
        smtp_port = spec.smtp.port(),
        ca = toml_string(spec.ca_file),
        dns = spec.dns,
    );
    match &spec.entra {
        Some((section, secret_file)) => {
            let _ = write!(
                text,
                "\n{section}\n[app]\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = {}\n",
                toml_string(secret_file)
            );
            // These four default to longer intervals (12h, 1h, 1h, 15m); the target is
            // every check at the one interval, so they are brought down to it.
            let every = humantime::format_duration(spec.interval);
            for check in ["domain", "licence", "admins", "health"] {
                let _ = write!(text, "\n[checks.{check}]\ninterval = \"{every}\"\n");
            }
        }
        // The credential-free HTTP checks are on by default and would reach the internet.
        None => text.push_str(
            "\n# dns and smtp_rcpt only; the HTTP checks would reach the internet.\n\
             [checks.tenant]\nenabled = false\n[checks.realm]\nenabled = false\n\
             [checks.domain]\nenabled = false\n",
        ),
    }
    for index in 0..spec.tenants {
        let (name, domain, watched) = tenant(index);
        let _ = write!(
            text,
            "\n[[tenants]]\nname = \"{name}\"\ndomain = \"{domain}\"\nwatch = [\"{watched}\"]\n"
        );
        if spec.entra.is_some() {
            let (tenant_id, _) = tenant_ids(index);
            let _ = writeln!(text, "tenant_id = \"{tenant_id}\"");
        }
    }
    text
}

/// A path as a TOML basic string (JSON string escaping is valid TOML).
fn toml_string(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tenants` tenants at 5 minutes with everything else at the harness's defaults.
    fn spec(tenants: usize, entra: Option<(String, &'static Path)>) -> ConfigSpec<'static> {
        ConfigSpec {
            tenants,
            interval: Duration::from_secs(300),
            ok_sample_interval: None,
            db: Path::new("/tmp/x/tw.db"),
            ca_file: Path::new("/tmp/x/ca.pem"),
            smtp: "127.0.0.1:2525".parse().unwrap(),
            dns: "127.0.0.1:5353".parse().unwrap(),
            entra,
        }
    }

    #[test]
    fn config_lists_every_tenant_with_one_watched_address() {
        let text = config(&spec(3, None));
        assert_eq!(text.matches("[[tenants]]").count(), 3);
        assert!(text.contains("watch = [\"probe@t00002.example\"]"));
        assert!(text.contains("interval = \"5m\""));
        assert!(!text.contains("ok_sample_interval"));
        assert_eq!(
            mx_host("t00002.example"),
            "t00002-example.mail.protection.outlook.com"
        );
        let parsed = tw_core::config::parse(&text).unwrap();
        assert_eq!(parsed.tenants.len(), 3);
        assert!(parsed
            .tenants
            .iter()
            .all(|tenant| tenant.tenant_id.is_none()));
    }

    #[test]
    fn all_checks_config_names_the_app_and_every_tenant_id() {
        let section = "[entra]\nlogin_url = \"https://127.0.0.1:1\"\ngraph_url = \"https://127.0.0.1:2\"\nrdap_bootstrap_url = \"https://127.0.0.1:3/dns.json\"\nextra_ca_file = \"/tmp/x/ca.pem\"\n";
        let text = config(&spec(
            2,
            Some((section.to_owned(), Path::new("/tmp/x/app-secret"))),
        ));
        let parsed = tw_core::config::parse(&text).unwrap();
        let ids: Vec<String> = parsed
            .tenants
            .iter()
            .map(|tenant| {
                tenant
                    .tenant_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(ids, [tenant_ids(0).0, tenant_ids(1).0]);
        assert!(text.contains(&format!("client_id = \"{CLIENT_ID}\"")));
        assert_eq!(text.matches("interval = \"5m\"").count(), 5, "{text}");
        assert!(!text.contains("enabled = false"));
    }
}
