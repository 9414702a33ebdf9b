//! Shared set-up for the probe conversation tests: an EOP-like SMTP simulator with a test CA,
//! an authoritative DNS simulator, and a `Config` written the way an operator writes one (TOML
//! text through `tw_core::config::parse`) that points the probes at both.
//!
//! Included by each test file with `#[path = "support/sims.rs"] mod support;`, so not every
//! helper is used by every test binary.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;

use tempfile::NamedTempFile;
use tokio_util::sync::{CancellationToken, DropGuard};
use tw_core::config::Config;
use tw_core::{CheckKind, Direction, Evidence, Observation, SmtpEvidence, Timestamp};
use tw_probe::{plan, run_job, Clients, ProbeMemory};
use tw_sim::dns::DnsSim;
use tw_sim::smtp::{SmtpSim, SmtpSimConfig};
use tw_sim::tls::{untrusted_server_config, TestCa};

/// The name EOP presents in its greeting; not the tenant's MX name.
pub(crate) const BANNER: &str = "AM5EUR02FT017.mail.protection.outlook.com";
/// The SAN on the simulator's certificate, as on EOP's own.
pub(crate) const EOP_CERT_NAME: &str = "*.mail.protection.outlook.com";
pub(crate) const HELO: &str = "probe.msp.example";
pub(crate) const MAIL_FROM: &str = "probe@msp.example";

/// Which certificate the SMTP simulator presents on STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cert {
    /// Signed by the test CA whose PEM is in the config's `extra_ca_file`.
    Trusted,
    /// Self-signed; no CA the probe knows vouches for it.
    Untrusted,
    /// STARTTLS not offered at all (stripped, or a server without TLS).
    NoStartTls,
}

/// Both simulators and the CA file, alive until dropped (the drop guard stops the sims).
pub(crate) struct Sims {
    pub(crate) smtp: SmtpSim,
    pub(crate) dns: DnsSim,
    pub(crate) ca_file: NamedTempFile,
    /// Port of every MX connection in the config; the SMTP sim's unless overridden.
    pub(crate) smtp_port: u16,
    shutdown: CancellationToken,
    _stop: DropGuard,
}

impl Sims {
    pub(crate) async fn start() -> Sims {
        Sims::start_with(Cert::Trusted).await
    }

    pub(crate) async fn start_with(cert: Cert) -> Sims {
        let ca = TestCa::generate().expect("test CA");
        let tls = match cert {
            Cert::Trusted => Some(ca.server_config(&[EOP_CERT_NAME])),
            Cert::Untrusted => Some(untrusted_server_config(&[EOP_CERT_NAME])),
            Cert::NoStartTls => None,
        }
        .map(|config| config.expect("server TLS config"));
        let shutdown = CancellationToken::new();
        let smtp = SmtpSim::start(
            SmtpSimConfig {
                banner_host: BANNER.to_owned(),
                tls,
                accept_all: false,
            },
            shutdown.clone(),
        )
        .await
        .expect("SMTP sim");
        let dns = DnsSim::start(shutdown.clone()).await.expect("DNS sim");
        let mut ca_file = NamedTempFile::new().expect("CA temp file");
        ca_file
            .write_all(ca.ca_cert_pem.as_bytes())
            .expect("write CA PEM");
        ca_file.flush().expect("flush CA PEM");
        Sims {
            smtp_port: smtp.local_addr().port(),
            smtp,
            dns,
            ca_file,
            _stop: shutdown.clone().drop_guard(),
            shutdown,
        }
    }

    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub(crate) fn dns_addr(&self) -> SocketAddr {
        self.dns.local_addr()
    }

    /// A config whose `[[tenants]]` blocks are `tenants` (TOML), with a 1 minute interval and a
    /// 3 second probe timeout.
    pub(crate) fn config(&self, tenants: &str) -> Config {
        self.config_with("1m", "3s", tenants)
    }

    pub(crate) fn config_with(&self, interval: &str, timeout: &str, tenants: &str) -> Config {
        let text = format!(
            r#"
[schedule]
interval = "{interval}"
timeout = "{timeout}"

[smtp]
helo_name = "{HELO}"
mail_from = "{MAIL_FROM}"
port = {port}
extra_ca_file = "{ca}"

[dns]
nameservers = ["{dns}"]
timeout = "2s"

# The HTTP checks have their own tests (crates/tw-entra); here they would reach the internet.
[checks.tenant]
enabled = false
[checks.realm]
enabled = false
[checks.domain]
enabled = false

{tenants}
"#,
            port = self.smtp_port,
            ca = self.ca_file.path().display(),
            dns = self.dns_addr(),
        );
        tw_core::config::parse(&text).unwrap_or_else(|errors| panic!("{errors}\n{text}"))
    }
}

/// One `[[tenants]]` block.
pub(crate) fn tenant(name: &str, domain: &str, watch: &[&str]) -> String {
    let watch = watch
        .iter()
        .map(|address| format!("{address:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[tenants]]\nname = \"{name}\"\ndomain = \"{domain}\"\nwatch = [{watch}]\n")
}

/// Runs every planned job of `check` once, with fresh clients (so a fresh resolver cache),
/// and returns their observations in plan order.
pub(crate) async fn run_check(
    config: &Config,
    check: CheckKind,
    memory: &ProbeMemory,
) -> Vec<Observation> {
    let clients = Clients::from_config(config).expect("clients from config");
    let mut observations = Vec::new();
    for job in plan(config).iter().filter(|job| job.check == check) {
        observations.extend(run_job(job, &clients, memory, Timestamp::now()).await);
    }
    observations
}

/// The single observation of a run that must yield exactly one.
pub(crate) fn only(mut observations: Vec<Observation>) -> Observation {
    assert_eq!(
        observations.len(),
        1,
        "expected one observation: {observations:#?}"
    );
    observations.remove(0)
}

pub(crate) fn smtp_evidence(observation: &Observation) -> &SmtpEvidence {
    match &observation.evidence {
        Evidence::SmtpRcpt(evidence) => evidence,
        other => panic!("expected SMTP evidence, got {other:?}"),
    }
}

/// The lines of one direction of the transcript, in order.
pub(crate) fn lines(evidence: &SmtpEvidence, direction: Direction) -> Vec<&str> {
    evidence
        .transcript
        .iter()
        .filter(|line| line.direction == direction)
        .map(|line| line.line.as_str())
        .collect()
}
