//! The SMTP simulator as a submission relay in front of Exchange Online: AUTH, DATA, and the
//! NDR for a recipient accepted at RCPT but gone afterwards, written into a Maildir.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tw_sim::smtp::{RcptBehaviour, SmtpSim, SmtpSimConfig};
use tw_sim::tls::TestCa;

const WAIT: Duration = Duration::from_secs(5);
const BANNER: &str = "AM5EUR02FT017.mail.protection.outlook.com";

struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = timeout(WAIT, self.stream.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            assert!(read > 0, "closed after {lines:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    async fn ask(&mut self, command: &str) -> Vec<String> {
        self.stream
            .get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    async fn ask_one(&mut self, command: &str) -> String {
        let reply = self.ask(command).await;
        assert_eq!(reply.len(), 1, "{reply:?}");
        reply.into_iter().next().unwrap()
    }
}

fn b64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &b)| w | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((word >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn temp_maildir() -> PathBuf {
    std::env::temp_dir().join(format!("tw-sim-relay-{:016x}", fastrand::u64(..)))
}

fn new_files(maildir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(maildir.join("new")) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn start(
    tls: Option<Arc<rustls::ServerConfig>>,
    implicit: bool,
) -> (SmtpSim, CancellationToken) {
    let shutdown = CancellationToken::new();
    let config = SmtpSimConfig {
        banner_host: BANNER.to_string(),
        tls,
        accept_all: false,
    };
    let sim = if implicit {
        SmtpSim::start_implicit_tls(config, shutdown.clone()).await
    } else {
        SmtpSim::start(config, shutdown.clone()).await
    }
    .unwrap();
    (sim, shutdown)
}

async fn plain_client(sim: &SmtpSim) -> Client<TcpStream> {
    let stream = TcpStream::connect(sim.local_addr()).await.unwrap();
    let mut client = Client {
        stream: BufReader::new(stream),
    };
    assert!(client.reply().await[0].starts_with("220 "));
    client
}

const MESSAGE: &str = "From: <probe@msp.example>\r\nTo: <gone@contoso.com>\r\nSubject: probe t1\r\nMessage-ID: <t1@msp.example>\r\nX-Tenantwatch-Probe: t1\r\n\r\nline one\r\n..starts with a dot\r\n.\r\n";

#[tokio::test]
async fn authenticated_message_to_a_vanished_recipient_is_taken_then_bounced_into_the_maildir() {
    let (sim, _shutdown) = start(None, false).await;
    let maildir = temp_maildir();
    sim.require_auth("probe", "s3cret-pw");
    sim.set_bounce_maildir(Some(maildir.clone()));
    sim.set_recipient("gone@contoso.com", RcptBehaviour::AcceptThenBounce);
    sim.set_recipient("alive@contoso.com", RcptBehaviour::Accept);

    let mut client = plain_client(&sim).await;
    let ehlo = client.ask("EHLO relay-client.msp.example").await;
    assert!(
        ehlo.contains(&"250-AUTH PLAIN LOGIN".to_string()),
        "{ehlo:?}"
    );
    assert!(client
        .ask_one("MAIL FROM:<probe@msp.example>")
        .await
        .starts_with("530 5.7.57 "));
    assert_eq!(
        client
            .ask_one(&format!("AUTH PLAIN {}", b64("\0probe\0wrong")))
            .await,
        "535 5.7.3 Authentication unsuccessful"
    );
    assert_eq!(
        client
            .ask_one(&format!("AUTH PLAIN {}", b64("\0probe\0s3cret-pw")))
            .await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        client
            .ask_one("MAIL FROM:<probe@msp.example> RET=HDRS ENVID=t1")
            .await,
        "250 2.1.0 Sender OK"
    );
    assert_eq!(
        client
            .ask_one("RCPT TO:<gone@contoso.com> NOTIFY=FAILURE,DELAY")
            .await,
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        client.ask_one("RCPT TO:<alive@contoso.com>").await,
        "250 2.1.5 Recipient OK"
    );
    assert!(!sim.saw_data());
    assert!(client.ask_one("DATA").await.starts_with("354 "));
    let queued = client.ask_one(MESSAGE.trim_end_matches("\r\n")).await;
    assert!(queued.starts_with("250 2.6.0 <"), "{queued}");
    assert!(queued.ends_with("Queued mail for delivery"), "{queued}");
    assert!(sim.saw_data());

    let messages = sim.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.mail_from, "probe@msp.example");
    assert_eq!(
        message.recipients,
        ["gone@contoso.com", "alive@contoso.com"]
    );
    assert_eq!(message.authenticated_as.as_deref(), Some("probe"));
    assert!(
        message.data.contains("\r\n.starts with a dot\r\n"),
        "{}",
        message.data
    );
    assert!(!message.data.contains("\r\n.\r\n"));

    // One NDR, for the vanished recipient only, with the original headers and ENVID.
    let files = new_files(&maildir);
    assert_eq!(files, message.bounces);
    assert_eq!(files.len(), 1);
    let ndr = std::fs::read_to_string(&files[0]).unwrap();
    for expected in [
        "Return-Path: <>\r\n",
        "To: <probe@msp.example>\r\n",
        "Original-Envelope-Id: t1\r\n",
        "Final-Recipient: rfc822;gone@contoso.com\r\nAction: failed\r\nStatus: 5.1.10\r\n",
        "X-Tenantwatch-Probe: t1\r\n",
    ] {
        assert!(ndr.contains(expected), "{expected:?} missing:\n{ndr}");
    }
    assert!(!ndr.contains("alive@contoso.com"));
    assert!(std::fs::read_dir(maildir.join("tmp"))
        .unwrap()
        .next()
        .is_none());

    // The transaction is over: a new one starts clean and a null sender gets no NDR.
    assert_eq!(client.ask_one("MAIL FROM:<>").await, "250 2.1.0 Sender OK");
    client.ask_one("RCPT TO:<gone@contoso.com>").await;
    client.ask_one("DATA").await;
    assert!(client
        .ask_one("Subject: x\r\n\r\nbody\r\n.")
        .await
        .starts_with("250 2.6.0 "));
    assert_eq!(new_files(&maildir).len(), 1);
    assert_eq!(
        client.ask_one("QUIT").await,
        "221 2.0.0 Service closing transmission channel"
    );
    std::fs::remove_dir_all(&maildir).unwrap();
}

#[tokio::test]
async fn auth_login_and_data_without_recipients() {
    let (sim, _shutdown) = start(None, false).await;
    sim.require_auth("probe", "pw");
    let mut client = plain_client(&sim).await;
    client.ask("EHLO relay-client.msp.example").await;
    assert_eq!(client.ask_one("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(client.ask_one(&b64("probe")).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        client.ask_one(&b64("pw")).await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        client.ask_one("AUTH PLAIN").await,
        "503 5.5.1 Already authenticated"
    );
    client.ask_one("MAIL FROM:<probe@msp.example>").await;
    // Unknown recipients are refused (DBEB), so DATA has nobody to deliver to.
    assert!(client
        .ask_one("RCPT TO:<unknown@contoso.com>")
        .await
        .starts_with("550 5.4.1 "));
    assert!(client.ask_one("DATA").await.starts_with("554 5.5.1 "));
    assert!(sim.messages().is_empty());
}

#[tokio::test]
async fn auth_is_offered_only_inside_tls_and_implicit_tls_greets_after_the_handshake() {
    let ca = TestCa::generate().unwrap();
    let (starttls, _a) = start(Some(ca.server_config(&["localhost"]).unwrap()), false).await;
    starttls.require_auth("probe", "pw");
    let mut client = plain_client(&starttls).await;
    let ehlo = client.ask("EHLO relay-client.msp.example").await;
    assert!(ehlo.contains(&"250-STARTTLS".to_string()), "{ehlo:?}");
    assert!(!ehlo.iter().any(|line| line.contains("AUTH")), "{ehlo:?}");
    assert!(client
        .ask_one(&format!("AUTH PLAIN {}", b64("\0probe\0pw")))
        .await
        .starts_with("503 "));

    let (implicit, _b) = start(Some(ca.server_config(&["localhost"]).unwrap()), true).await;
    implicit.require_auth("probe", "pw");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_cert_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(implicit.local_addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut client = Client {
        stream: BufReader::new(tls),
    };
    assert!(client.reply().await[0].starts_with(&format!("220 {BANNER} ")));
    let ehlo = client.ask("EHLO relay-client.msp.example").await;
    assert!(
        ehlo.contains(&"250-AUTH PLAIN LOGIN".to_string()),
        "{ehlo:?}"
    );
    assert!(!ehlo.contains(&"250-STARTTLS".to_string()), "{ehlo:?}");
    assert!(client.ask_one("STARTTLS").await.starts_with("500 "));
    assert_eq!(
        client
            .ask_one(&format!("AUTH PLAIN {}", b64("\0probe\0pw")))
            .await,
        "235 2.7.0 Authentication successful"
    );
}

#[tokio::test]
async fn implicit_tls_without_a_certificate_is_refused() {
    let shutdown = CancellationToken::new();
    let config = SmtpSimConfig {
        banner_host: BANNER.to_string(),
        tls: None,
        accept_all: true,
    };
    let err = SmtpSim::start_implicit_tls(config, shutdown)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
