//! Test support: loopback simulators, a daemon process driven like systemd would drive it,
//! and `eventually` for asynchronous state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tw_sim::dns::DnsSim;
use tw_sim::smtp::{SmtpSim, SmtpSimConfig};
use tw_sim::tls::TestCa;

/// Polls `probe` every 100 ms until it returns `Some`, or panics with `what` after `within`.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The DNS and SMTP simulators with a CA the daemon trusts, serving `domains`.
pub(crate) struct Sims {
    pub(crate) dns: DnsSim,
    pub(crate) smtp: SmtpSim,
    pub(crate) ca_file: PathBuf,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Sims {
    pub(crate) async fn start(dir: &Path, domains: &[&str]) -> Sims {
        let shutdown = CancellationToken::new();
        let ca = TestCa::generate().unwrap();
        let tls = ca
            .server_config(&["*.mail.protection.outlook.com"])
            .unwrap();
        let smtp = SmtpSim::start(
            SmtpSimConfig {
                banner_host: "AM5EUR02FT017.mail.protection.outlook.com".into(),
                tls: Some(tls),
                accept_all: false,
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let dns = DnsSim::start(shutdown.clone()).await.unwrap();
        for domain in domains {
            dns.add_microsoft_365_domain(domain);
        }
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca.ca_cert_pem).unwrap();
        Sims {
            dns,
            smtp,
            ca_file,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// `[smtp]` and `[dns]` sections pointing the daemon at the simulators.
    pub(crate) fn config_sections(&self) -> String {
        smtp_dns_sections(
            self.smtp.local_addr().port(),
            &self.ca_file,
            self.dns.local_addr(),
        )
    }
}

pub(crate) fn smtp_dns_sections(smtp_port: u16, ca_file: &Path, dns: SocketAddr) -> String {
    format!(
        "[smtp]\nhelo_name = \"probe.msp.example\"\nmail_from = \"probe@msp.example\"\nport = {smtp_port}\nextra_ca_file = \"{}\"\n\n[dns]\nnameservers = [\"{dns}\"]\ntimeout = \"2s\"\n\n[checks.tenant]\nenabled = false\n[checks.realm]\nenabled = false\n[checks.domain]\nenabled = false\n",
        ca_file.display()
    )
}

/// A `tenantwatch run` process on a temporary database, listening on a loopback port it
/// chose itself (read back from its JSON log).
pub(crate) struct TestDaemon {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) config_path: PathBuf,
    pub(crate) db_path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl TestDaemon {
    /// `body` is the config without `[server]` and `[store]`, which are added here.
    pub(crate) async fn spawn(dir: &Path, body: &str) -> TestDaemon {
        let db_path = dir.join("tenantwatch.db");
        let config_path = dir.join("tenantwatch.toml");
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\npath = \"{}\"\n\n{body}",
            db_path.display()
        );
        std::fs::write(&config_path, config).unwrap();
        let args = vec![
            "run".into(),
            "--config".into(),
            config_path.clone().into_os_string(),
        ];
        TestDaemon::start(args, config_path, db_path).await
    }

    /// Starts `tenantwatch --log-format json ARGS…` and waits for its listen address.
    pub(crate) async fn start(
        args: Vec<std::ffi::OsString>,
        config_path: PathBuf,
        db_path: PathBuf,
    ) -> TestDaemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tenantwatch"))
            .args(["--log-format", "json"])
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("daemon: {line}");
                }
                collected.lock().push(line);
            }
        });
        let addr = eventually(
            Duration::from_secs(30),
            "the daemon to log its listen address",
            || {
                let logs = logs.clone();
                async move {
                    logs.lock().iter().find_map(|line| {
                        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                        entry.get("listen")?.as_str()?.parse::<SocketAddr>().ok()
                    })
                }
            },
        )
        .await;
        TestDaemon {
            child,
            addr,
            config_path,
            db_path,
            logs,
        }
    }

    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().clone()
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// The value of one series, e.g. `tenantwatch_check_status{check="smtp_rcpt",target="a@b.c",tenant="t"}`.
    pub(crate) async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
    }

    /// The daemon's process id, for tools that act on a running process (`prlimit`).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("daemon still running")
    }

    /// `None` while the process runs; its exit status once it has ended (crashed or not).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().expect("daemon still running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} failed");
    }

    pub(crate) async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "daemon did not exit within {within:?}; logs:\n{}",
                    self.logs().join("\n")
                )
            })
            .unwrap()
    }
}

/// A minimal HTTP/1.1 GET, enough for /metrics and the health endpoints.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, dechunk(&body))
}

/// axum answers with chunked encoding; undo it so callers see the body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size_line, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return body.to_owned();
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

pub(crate) fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("tenantwatch-e2e")
        .tempdir()
        .unwrap()
}
