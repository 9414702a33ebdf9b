//! The mailflow probe end to end on loopback: the SMTP simulator as the MSP's relay in front
//! of Exchange Online (it writes Exchange's NDR into the bounce Maildir), and a real Dovecot
//! serving that Maildir over IMAPS as the bounce mailbox.
//!
//! `scripts/test.sh` starts Dovecot (`scripts/dovecot-test-instance.sh`) and passes it in
//! `TW_DOVECOT_ADDR`, `TW_DOVECOT_MAILDIR`, `TW_DOVECOT_USER`, `TW_DOVECOT_PASSWORD_FILE` and
//! `TW_DOVECOT_CA` (and `TW_DOVECOT_STARTTLS_ADDR`), with `TW_REQUIRE_DOVECOT=1` so that these tests fail rather than skip
//! there. Each test uses a folder of its own in the one mailbox, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tw_core::config::{EmailTls, MailflowConfig, SecretSource};
use tw_core::{DomainName, EmailAddress, Evidence, Reason, Status, TenantName};
use tw_mailflow::{MailflowClients, Outcome};
use tw_sim::smtp::{exchange_online_ndr, NdrRequest, RcptBehaviour, SmtpSim, SmtpSimConfig};
use tw_sim::tls::TestCa;

const RELAY_USER: &str = "probe";
const RELAY_PASSWORD: &str = "relay-Pa55word-canary";
const FROM: &str = "bounces@msp-mail.example";
const HEALTHY: &str = "ceo@contoso.com";
const VANISHED: &str = "admin@contoso.com";

struct Dovecot {
    port: u16,
    /// Plain IMAP on which STARTTLS is required before login.
    starttls_port: u16,
    maildir: PathBuf,
    user: String,
    password_file: PathBuf,
    ca: PathBuf,
}

/// The Dovecot instance, or `None` (after saying so loudly) when the tests run without it.
fn dovecot() -> Option<Dovecot> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let names = [
        "TW_DOVECOT_ADDR",
        "TW_DOVECOT_MAILDIR",
        "TW_DOVECOT_USER",
        "TW_DOVECOT_PASSWORD_FILE",
        "TW_DOVECOT_CA",
        "TW_DOVECOT_STARTTLS_ADDR",
    ];
    let values: Vec<Option<String>> = names.iter().map(|n| var(n)).collect();
    if values.iter().any(Option::is_none) {
        let message = "these tests need a real Dovecot on loopback (TW_DOVECOT_* unset). Run them \
                       with scripts/test.sh, which installs dovecot-imapd and starts a private \
                       instance with scripts/dovecot-test-instance.sh";
        if var("TW_REQUIRE_DOVECOT").as_deref() == Some("1") {
            panic!("{message}");
        }
        eprintln!("\n!!!!! SKIPPED: {message} !!!!!\n");
        return None;
    }
    let values: Vec<String> = values.into_iter().flatten().collect();
    let addr: std::net::SocketAddr = values[0].parse().expect("TW_DOVECOT_ADDR is ip:port");
    let starttls: std::net::SocketAddr = values[5]
        .parse()
        .expect("TW_DOVECOT_STARTTLS_ADDR is ip:port");
    Some(Dovecot {
        port: addr.port(),
        starttls_port: starttls.port(),
        maildir: PathBuf::from(&values[1]),
        user: values[2].clone(),
        password_file: PathBuf::from(&values[3]),
        ca: PathBuf::from(&values[4]),
    })
}

/// One test's world: the relay simulator, its own IMAP folder, the config pointing at both.
struct World {
    sim: SmtpSim,
    config: MailflowConfig,
    clients: MailflowClients,
    /// The folder's Maildir (`<maildir>/.<folder>`).
    folder_dir: PathBuf,
    dir: PathBuf,
    _shutdown: tokio_util::sync::DropGuard,
}

impl World {
    async fn new(dovecot: &Dovecot, implicit_tls: bool) -> World {
        let ca = TestCa::generate().unwrap();
        let shutdown = CancellationToken::new();
        let sim_config = SmtpSimConfig {
            banner_host: "relay.msp-mail.example".to_owned(),
            tls: Some(ca.server_config(&["localhost"]).unwrap()),
            accept_all: false,
        };
        let sim = if implicit_tls {
            SmtpSim::start_implicit_tls(sim_config, shutdown.clone()).await
        } else {
            SmtpSim::start(sim_config, shutdown.clone()).await
        }
        .unwrap();
        sim.require_auth(RELAY_USER, RELAY_PASSWORD);
        sim.set_recipient(HEALTHY, RcptBehaviour::Accept);
        sim.set_recipient(VANISHED, RcptBehaviour::AcceptThenBounce);

        let folder = format!("tw-test-{:016x}", fastrand::u64(..));
        let folder_dir = dovecot.maildir.join(format!(".{folder}"));
        // Dovecot runs as the Maildir's owner and must be able to move and delete files here.
        let owner = std::fs::metadata(&dovecot.maildir).unwrap();
        for sub in ["", "cur", "new", "tmp"] {
            let path = folder_dir.join(sub);
            std::fs::create_dir_all(&path).unwrap();
            std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        }
        sim.set_bounce_maildir(Some(folder_dir.clone()));

        let dir = std::env::temp_dir().join(format!("tw-mailflow-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        let dovecot_ca = std::fs::read_to_string(&dovecot.ca).unwrap();
        std::fs::write(&ca_file, format!("{}\n{dovecot_ca}", ca.ca_cert_pem)).unwrap();

        let config = MailflowConfig {
            relay_host: "localhost".to_owned(),
            relay_port: sim.local_addr().port(),
            relay_tls: if implicit_tls {
                EmailTls::Implicit
            } else {
                EmailTls::StartTls
            },
            relay_username: Some(RELAY_USER.to_owned()),
            relay_password: Some(SecretSource::Env("TW_TEST_RELAY_PASSWORD".to_owned())),
            helo_name: DomainName::parse("probe.msp-mail.example").unwrap(),
            mail_from: EmailAddress::parse(FROM).unwrap(),
            imap_host: "localhost".to_owned(),
            imap_port: dovecot.port,
            imap_tls: EmailTls::Implicit,
            imap_username: dovecot.user.clone(),
            imap_password: SecretSource::File(dovecot.password_file.clone()),
            imap_folder: folder,
            bounce_wait: Duration::from_secs(3),
            poll_interval: Duration::from_secs(1),
            extra_ca_file: Some(ca_file),
        };
        let clients = MailflowClients::load(&config, &env).unwrap();
        World {
            sim,
            config,
            clients,
            folder_dir,
            dir,
            _shutdown: shutdown.drop_guard(),
        }
    }

    async fn run(&self, to: &str) -> Outcome {
        self.run_with(&self.config, &self.clients, to).await
    }

    async fn run_with(
        &self,
        config: &MailflowConfig,
        clients: &MailflowClients,
        to: &str,
    ) -> Outcome {
        let tenant = TenantName::parse("contoso").unwrap();
        let to = EmailAddress::parse(to).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        tw_mailflow::run(config, clients, &tenant, &to, deadline).await
    }

    fn files(&self) -> Vec<PathBuf> {
        ["new", "cur"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(self.folder_dir.join(sub)).unwrap())
            .map(|entry| entry.unwrap().path())
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The environment the clients read the relay password from.
fn env(name: &str) -> Option<String> {
    (name == "TW_TEST_RELAY_PASSWORD").then(|| RELAY_PASSWORD.to_owned())
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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

/// No password, in clear or in any of its wire encodings, is in the stored evidence.
fn assert_no_secret(outcome: &Outcome, dovecot: &Dovecot) {
    let json =
        serde_json::to_string(&Evidence::Mailflow(Box::new(outcome.evidence.clone()))).unwrap();
    let imap_password = std::fs::read_to_string(&dovecot.password_file).unwrap();
    let imap_password = imap_password.trim();
    for secret in [
        RELAY_PASSWORD.to_owned(),
        b64(format!("\0{RELAY_USER}\0{RELAY_PASSWORD}").as_bytes()),
        b64(RELAY_PASSWORD.as_bytes()),
        imap_password.to_owned(),
        b64(format!("\0{}\0{imap_password}", dovecot.user).as_bytes()),
    ] {
        assert!(
            !json.contains(&secret),
            "secret {secret:?} in evidence: {json}"
        );
        assert!(!outcome.summary.contains(&secret), "secret in summary");
    }
    assert!(json.contains("[redacted]"), "{json}");
}

fn transcript_text(lines: &[tw_core::TranscriptLine]) -> String {
    lines.iter().map(|l| format!("{}\n", l.line)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_recipient_gets_no_bounce_and_the_message_carries_the_tag() {
    let Some(dovecot) = dovecot() else { return };
    let world = World::new(&dovecot, false).await;
    let outcome = world.run(HEALTHY).await;
    assert_eq!(outcome.reason, Reason::NoBounce, "{outcome:#?}");
    assert_eq!(outcome.reason.status(), Status::Ok);
    assert_eq!(outcome.target, HEALTHY);
    let evidence = &outcome.evidence;
    assert!(evidence.tag.starts_with("twp-"), "{}", evidence.tag);
    assert_eq!(
        evidence.message_id,
        format!("<{}@msp-mail.example>", evidence.tag)
    );
    assert!(evidence.dsn.is_none());
    assert!(evidence.polls >= 2, "{}", evidence.polls);
    assert!(evidence.waited_ms >= 3_000, "{}", evidence.waited_ms);
    let reply = evidence.relay_reply.as_deref().unwrap();
    assert!(reply.starts_with("250 2.6.0 "), "{reply}");

    let messages = world.sim.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.mail_from, FROM);
    assert_eq!(message.recipients, [HEALTHY]);
    assert_eq!(message.authenticated_as.as_deref(), Some(RELAY_USER));
    assert!(message
        .data
        .contains(&format!("X-Tenantwatch-Probe: {}\r\n", evidence.tag)));
    assert!(message
        .data
        .contains(&format!("Message-ID: {}\r\n", evidence.message_id)));

    let relay = transcript_text(&evidence.relay_transcript);
    assert!(relay.contains("STARTTLS\n"), "{relay}");
    assert!(relay.contains("AUTH PLAIN [redacted]\n"), "{relay}");
    assert!(
        relay.contains(&format!("ENVID={}", evidence.tag)),
        "{relay}"
    );
    assert!(relay.contains("NOTIFY=FAILURE,DELAY"), "{relay}");
    let imap = transcript_text(&evidence.imap_transcript);
    assert!(imap.contains("AUTHENTICATE PLAIN [redacted]"), "{imap}");
    assert!(
        imap.contains(&format!("UID SEARCH TEXT \"{}\"", evidence.tag)),
        "{imap}"
    );
    assert_no_secret(&outcome, &dovecot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_recipient_bounces_critical_with_the_dsn_in_evidence_and_the_dsn_is_deleted() {
    let Some(dovecot) = dovecot() else { return };
    let mut world = World::new(&dovecot, false).await;
    // A bounce ends the wait at once, long before this.
    world.config.bounce_wait = Duration::from_secs(40);
    let started = Instant::now();
    let outcome = world.run(VANISHED).await;
    assert_eq!(outcome.reason, Reason::MailBounced, "{outcome:#?}");
    assert_eq!(outcome.reason.status(), Status::Critical);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // The NDR really went through the Maildir and Dovecot.
    let messages = world.sim.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].bounces.len(), 1);
    let dsn = outcome.evidence.dsn.as_ref().unwrap();
    assert_eq!(dsn.action, "failed");
    assert_eq!(dsn.status, "5.1.10");
    assert_eq!(
        dsn.diagnostic_code.as_deref(),
        Some("smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
    );
    assert_eq!(
        dsn.reporting_mta.as_deref(),
        Some("dns;AM0PR01MB1234.eurprd01.prod.outlook.com")
    );
    assert_eq!(
        dsn.final_recipient.as_deref(),
        Some("rfc822;admin@contoso.com")
    );
    assert!(dsn
        .subject
        .as_deref()
        .unwrap()
        .starts_with("Undeliverable: "));
    assert!(outcome.summary.contains("5.1.10"), "{}", outcome.summary);
    assert!(
        outcome.summary.contains("RESOLVER.ADR.RecipientNotFound"),
        "{}",
        outcome.summary
    );

    // Shown when the test fails (and with --nocapture): the evidence an operator would see.
    eprintln!(
        "{}\n{}",
        outcome.summary,
        serde_json::to_string_pretty(&outcome.evidence).unwrap()
    );
    // Cleaned up: Dovecot expunged the DSN file.
    assert_eq!(
        outcome.evidence.deleted.len(),
        1,
        "{:?}",
        outcome.evidence.deleted
    );
    assert!(world.files().is_empty(), "{:?}", world.files());
    assert_no_secret(&outcome, &dovecot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_relay_works_too() {
    let Some(dovecot) = dovecot() else { return };
    let mut world = World::new(&dovecot, true).await;
    world.config.bounce_wait = Duration::from_secs(15);
    let outcome = world.run(VANISHED).await;
    assert_eq!(outcome.reason, Reason::MailBounced, "{outcome:#?}");
    let relay = transcript_text(&outcome.evidence.relay_transcript);
    assert!(!relay.contains("STARTTLS"), "{relay}");
    assert!(relay.contains("AUTH PLAIN [redacted]"), "{relay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounce_mailbox_can_be_read_over_imap_starttls() {
    let Some(dovecot) = dovecot() else { return };
    let mut world = World::new(&dovecot, false).await;
    world.config.imap_port = dovecot.starttls_port;
    world.config.imap_tls = EmailTls::StartTls;
    world.config.bounce_wait = Duration::from_secs(15);
    let outcome = world.run(VANISHED).await;
    assert_eq!(outcome.reason, Reason::MailBounced, "{outcome:#?}");
    let imap = transcript_text(&outcome.evidence.imap_transcript);
    assert!(imap.contains("tw1 STARTTLS\n"), "{imap}");
    assert!(imap.contains("TLS established"), "{imap}");
    assert!(world.files().is_empty(), "{:?}", world.files());
    assert_no_secret(&outcome, &dovecot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_refuses_auth_or_is_down_is_unknown_and_sends_nothing() {
    let Some(dovecot) = dovecot() else { return };
    let world = World::new(&dovecot, false).await;
    world.sim.require_auth(RELAY_USER, "another password");
    let outcome = world.run(VANISHED).await;
    assert_eq!(outcome.reason, Reason::RelayFailed, "{outcome:#?}");
    assert_eq!(outcome.reason.status(), Status::Unknown);
    assert!(outcome.summary.contains("535 5.7.3"), "{}", outcome.summary);
    assert!(world.sim.messages().is_empty());
    assert_no_secret(&outcome, &dovecot);

    // Nothing listens on the relay port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = world.config.clone();
    config.relay_port = port;
    let outcome = world.run_with(&config, &world.clients, HEALTHY).await;
    assert_eq!(outcome.reason, Reason::RelayFailed, "{outcome:#?}");
    assert!(
        outcome.summary.contains("connect failed"),
        "{}",
        outcome.summary
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_mailbox_is_unknown_and_nothing_is_sent() {
    let Some(dovecot) = dovecot() else { return };
    let world = World::new(&dovecot, false).await;

    let wrong = world.dir.join("wrong-password");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let mut config = world.config.clone();
    config.imap_password = SecretSource::File(wrong);
    let clients = MailflowClients::load(&config, &env).unwrap();
    let outcome = world.run_with(&config, &clients, VANISHED).await;
    assert_eq!(outcome.reason, Reason::MailboxUnreadable, "{outcome:#?}");
    assert_eq!(outcome.reason.status(), Status::Unknown);
    assert!(
        outcome.summary.contains("AUTHENTICATIONFAILED"),
        "{}",
        outcome.summary
    );
    assert!(!outcome.summary.contains("not the password"));
    assert!(
        !serde_json::to_string(&Evidence::Mailflow(Box::new(outcome.evidence.clone())))
            .unwrap()
            .contains("not the password")
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = world.config.clone();
    config.imap_port = closed.local_addr().unwrap().port();
    drop(closed);
    let outcome = world.run_with(&config, &world.clients, VANISHED).await;
    assert_eq!(outcome.reason, Reason::MailboxUnreadable, "{outcome:#?}");
    assert!(
        outcome.summary.contains("connect failed"),
        "{}",
        outcome.summary
    );

    let mut config = world.config.clone();
    config.imap_folder = "no-such-folder-here".to_owned();
    let outcome = world.run_with(&config, &world.clients, VANISHED).await;
    assert_eq!(outcome.reason, Reason::MailboxUnreadable, "{outcome:#?}");
    assert!(
        outcome.summary.contains("SELECT no-such-folder-here"),
        "{}",
        outcome.summary
    );

    // The relay was never asked: no probe message without a mailbox to see its bounce.
    assert!(world.sim.messages().is_empty());
}

fn plant_dsn(world: &World, tag: &str, age: Duration) -> PathBuf {
    let ndr = exchange_online_ndr(&NdrRequest {
        to: FROM.to_owned(),
        recipient: VANISHED.to_owned(),
        original_headers: format!(
            "Subject: tenantwatch mail-flow probe {tag}\r\nMessage-ID: <{tag}@msp-mail.example>\r\nX-Tenantwatch-Probe: {tag}\r\n"
        ),
        envelope_id: Some(tag.to_owned()),
        received_from: "relay.msp-mail.example".to_owned(),
    });
    let path = tw_sim::smtp::deliver_to_maildir(&world.folder_dir, ndr.as_bytes()).unwrap();
    // Maildir's received date is the file's modification time.
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
    path
}

fn exists_by_name(world: &World, planted: &Path) -> bool {
    let name = planted.file_name().unwrap().to_string_lossy().into_owned();
    world.files().iter().any(|path| {
        path.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&name)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_probes_dsn_is_not_taken_for_ours_and_stale_probe_dsns_are_deleted() {
    let Some(dovecot) = dovecot() else { return };
    let world = World::new(&dovecot, false).await;
    let fresh = plant_dsn(
        &world,
        "twp-1700000000000-00000000000000aa",
        Duration::from_secs(60),
    );
    let stale = plant_dsn(
        &world,
        "twp-1690000000000-00000000000000bb",
        Duration::from_secs(3 * 86_400),
    );

    let outcome = world.run(HEALTHY).await;
    assert_eq!(outcome.reason, Reason::NoBounce, "{outcome:#?}");
    assert!(outcome.evidence.dsn.is_none());
    assert_eq!(
        outcome.evidence.deleted.len(),
        1,
        "{:?}",
        outcome.evidence.deleted
    );
    assert!(outcome.evidence.deleted[0]
        .contains("stale DSN for probe twp-1690000000000-00000000000000bb"));
    assert!(
        exists_by_name(&world, &fresh),
        "the other probe's fresh DSN must stay"
    );
    assert!(
        !exists_by_name(&world, &stale),
        "the stale DSN must be gone"
    );
}

#[tokio::test]
async fn setup_errors_name_the_source_never_the_value() {
    let config_dir =
        std::env::temp_dir().join(format!("tw-mailflow-setup-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&config_dir).unwrap();
    let empty = config_dir.join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let base = MailflowConfig {
        relay_host: "relay.msp-mail.example".to_owned(),
        relay_port: 587,
        relay_tls: EmailTls::StartTls,
        relay_username: Some(RELAY_USER.to_owned()),
        relay_password: Some(SecretSource::Env("TW_TEST_RELAY_PASSWORD".to_owned())),
        helo_name: DomainName::parse("msp-mail.example").unwrap(),
        mail_from: EmailAddress::parse(FROM).unwrap(),
        imap_host: "imap.msp-mail.example".to_owned(),
        imap_port: 993,
        imap_tls: EmailTls::Implicit,
        imap_username: "bounces".to_owned(),
        imap_password: SecretSource::Env("TW_TEST_IMAP_PASSWORD".to_owned()),
        imap_folder: "INBOX".to_owned(),
        bounce_wait: Duration::from_secs(120),
        poll_interval: Duration::from_secs(5),
        extra_ca_file: None,
    };
    let err = MailflowClients::load(&base, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mailflow IMAP password: environment variable TW_TEST_IMAP_PASSWORD is not set"
    );
    let mut config = base.clone();
    config.imap_password = SecretSource::File(empty.clone());
    let err = MailflowClients::load(&config, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "mailflow IMAP password from file {} is empty",
            empty.display()
        )
    );
    config.imap_password = SecretSource::Env("TW_TEST_RELAY_PASSWORD".to_owned());
    config.extra_ca_file = Some(empty.clone());
    let err = MailflowClients::load(&config, &env).unwrap_err();
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );
    config.extra_ca_file = None;
    let clients = MailflowClients::load(&config, &env).unwrap();
    let debug = format!("{clients:?}");
    assert!(!debug.contains(RELAY_PASSWORD), "{debug}");
    std::fs::remove_dir_all(&config_dir).unwrap();
}
