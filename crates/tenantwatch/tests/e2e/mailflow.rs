//! The incident tenantwatch exists for, end to end with the real binary. First the healthy
//! path: the probe message reaches the admin's mailbox (the relay simulator hands it to the
//! Entra simulator's mailbox), Graph finds it, the latency is measured and the message is
//! deleted. Then the incident: Exchange Online
//! accepts mail for the admin at RCPT and then bounces it with `550 5.1.10
//! RESOLVER.ADR.RecipientNotFound`, because the admin lost the mailbox plan. The `mailflow`
//! check sends a tagged message through the MSP's relay (the SMTP simulator, which writes
//! Exchange's NDR into the bounce Maildir), reads the bounce back from a real Dovecot over
//! IMAPS, and Graph (the Entra simulator) says the mailbox plan is gone: the two layers agree,
//! and a "Mailbox unreachable" alert goes out at once.
//!
//! Needs the private Dovecot that scripts/test.sh starts (TW_DOVECOT_*); skips loudly
//! without it unless TW_REQUIRE_DOVECOT=1.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tw_core::{CheckKind, Evidence, Reason, Status};
use tw_sim::entra::{EntraSim, HealthyTenant};
use tw_sim::sink::HttpSink;
use tw_sim::smtp::{RcptBehaviour, SmtpSim, SmtpSimConfig};
use tw_sim::tls::TestCa;
use tw_store::Store;

use crate::support::{eventually, temp_dir, TestDaemon};

const TENANT_ID: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const ADMIN_ID: &str = "87d349ed-0000-4000-8000-5f2406dee5bd";
const ADMIN: &str = "admin@contoso.example";
const RELAY_PASSWORD: &str = "relay-canary-Pa55";

struct Dovecot {
    addr: String,
    maildir: PathBuf,
    user: String,
    password_file: String,
    ca: PathBuf,
}

fn dovecot() -> Option<Dovecot> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("TW_DOVECOT_ADDR"),
        var("TW_DOVECOT_MAILDIR"),
        var("TW_DOVECOT_USER"),
        var("TW_DOVECOT_PASSWORD_FILE"),
        var("TW_DOVECOT_CA"),
    ) {
        (Some(addr), Some(maildir), Some(user), Some(password_file), Some(ca)) => Some(Dovecot {
            addr,
            maildir: maildir.into(),
            user,
            password_file,
            ca: ca.into(),
        }),
        _ => {
            let message =
                "the mailflow e2e test needs the Dovecot of scripts/test.sh (TW_DOVECOT_* unset)";
            assert_ne!(var("TW_REQUIRE_DOVECOT").as_deref(), Some("1"), "{message}");
            eprintln!("\n!!!!! SKIPPED: {message} !!!!!\n");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_after_acceptance_and_a_lost_mailbox_plan_page_at_once() {
    let Some(dovecot) = dovecot() else { return };
    let dir = temp_dir();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let ca = TestCa::generate().unwrap();

    // The MSP's relay, in front of an Exchange Online that bounces the admin after DATA.
    let relay = SmtpSim::start(
        SmtpSimConfig {
            banner_host: "relay.msp-mail.example".to_owned(),
            tls: Some(ca.server_config(&["localhost"]).unwrap()),
            accept_all: false,
        },
        stop.clone(),
    )
    .await
    .unwrap();
    relay.require_auth("probe", RELAY_PASSWORD);
    relay.set_recipient(ADMIN, RcptBehaviour::Accept);
    let folder = format!("tw-e2e-{:016x}", fastrand::u64(..));
    let folder_dir = dovecot.maildir.join(format!(".{folder}"));
    let owner = std::fs::metadata(&dovecot.maildir).unwrap();
    for sub in ["", "cur", "new", "tmp"] {
        let path = folder_dir.join(sub);
        std::fs::create_dir_all(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    relay.set_bounce_maildir(Some(folder_dir.clone()));

    let entra = EntraSim::start(&ca, stop.clone()).await.unwrap();
    entra.add_healthy_tenant(&HealthyTenant {
        tenant_id: TENANT_ID,
        display_name: "Contoso",
        domains: &["contoso.example"],
        users: &[(ADMIN_ID, ADMIN)],
        client_id: CLIENT_ID,
        client_secret: "app-secret-not-under-test",
    });
    let sink = HttpSink::start(stop.clone()).await.unwrap();
    // What Exchange Online does with an accepted message: it lands in the mailbox.
    let mailboxes = entra.clone();
    relay.set_delivery_hook(Some(std::sync::Arc::new(move |message, delivered| {
        let id = message.header("Message-ID").unwrap_or_default();
        let subject = message.header("Subject").unwrap_or_default();
        for recipient in delivered {
            mailboxes.deliver_message(TENANT_ID, recipient, &id, &subject);
        }
    })));

    let ca_file = dir.path().join("ca.pem");
    let dovecot_ca = std::fs::read_to_string(&dovecot.ca).unwrap();
    std::fs::write(&ca_file, format!("{}\n{dovecot_ca}", ca.ca_cert_pem)).unwrap();
    let app_secret = dir.path().join("app-secret");
    std::fs::write(&app_secret, "app-secret-not-under-test").unwrap();
    let relay_secret = dir.path().join("relay-secret");
    std::fs::write(&relay_secret, RELAY_PASSWORD).unwrap();
    let (imap_host, imap_port) = dovecot.addr.rsplit_once(':').unwrap();
    let imap_host = if imap_host == "127.0.0.1" {
        "localhost"
    } else {
        imap_host
    };
    let config_path = dir.path().join("tenantwatch.toml");
    let db_path = dir.path().join("tenantwatch.db");
    std::fs::write(
        &config_path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[store]
path = "{db}"
[schedule]
interval = "20s"
timeout = "9s"
[smtp]
helo_name = "probe.msp.example"
mail_from = "probe@msp.example"

[entra]
login_url = "{login}"
graph_url = "{graph}"
rdap_bootstrap_url = "{rdap}"
extra_ca_file = "{ca}"

[app]
client_id = "{CLIENT_ID}"
client_secret_file = "{app_secret}"

[mailflow]
relay_host = "localhost"
relay_port = {relay_port}
relay_tls = "starttls"
relay_username = "probe"
relay_password_file = "{relay_secret}"
mail_from = "bounces@msp-mail.example"
imap_host = "{imap_host}"
imap_port = {imap_port}
imap_tls = "implicit"
imap_username = "{imap_user}"
imap_password_file = "{imap_password}"
imap_folder = "{folder}"
bounce_wait = "6s"
poll_interval = "1s"
extra_ca_file = "{ca}"

# Only the layers under test.
[checks.dns]
enabled = false
[checks.smtp_rcpt]
enabled = false
[checks.tenant]
enabled = false
[checks.realm]
enabled = false
[checks.domain]
enabled = false
[checks.signin]
enabled = false
# The licence check reads an identity's mailbox plan by the object id the identity check
# learned.
[checks.identity]
interval = "20s"
[checks.admins]
enabled = false
[checks.health]
enabled = false
[checks.licence]
interval = "20s"
[checks.mailflow]
interval = "20s"
timeout = "15s"

[[tenants]]
name = "contoso"
domain = "contoso.example"
tenant_id = "{TENANT_ID}"
watch = ["{ADMIN}"]
mailflow_to = ["{ADMIN}"]

[alerting]
confirm = 2

[[receivers]]
name = "hook"
kind = "webhook"
url = "{sink}/hook"
"#,
            db = db_path.display(),
            login = entra.login_url(),
            graph = entra.graph_url(),
            rdap = entra.rdap_bootstrap_url(),
            ca = ca_file.display(),
            app_secret = app_secret.display(),
            relay_port = relay.local_addr().port(),
            relay_secret = relay_secret.display(),
            imap_user = dovecot.user,
            imap_password = dovecot.password_file,
            sink = sink.url(),
        ),
    )
    .unwrap();

    let daemon = TestDaemon::start(
        vec![
            "run".into(),
            "--config".into(),
            config_path.clone().into_os_string(),
        ],
        config_path,
        db_path.clone(),
    )
    .await;
    let status = |check: &str| {
        format!(
            "tenantwatch_check_status{{check=\"{check}\",target=\"{ADMIN}\",tenant=\"contoso\"}}"
        )
    };
    eventually(
        Duration::from_secs(45),
        "mailflow and licence ok for the admin",
        || async {
            (daemon.metric(&status("mailflow")).await == Some(0.0)
                && daemon.metric(&status("licence")).await == Some(0.0))
            .then_some(())
        },
    )
    .await;

    // The admin's licence loses its Exchange plan; Exchange now bounces after DATA.
    entra.set_user_licenses(TENANT_ID, ADMIN_ID, Vec::new());
    relay.set_recipient(ADMIN, RcptBehaviour::AcceptThenBounce);
    eventually(
        Duration::from_secs(60),
        "mailflow critical and licence warning",
        || async {
            (daemon.metric(&status("mailflow")).await == Some(2.0)
                && daemon.metric(&status("licence")).await == Some(1.0))
            .then_some(())
        },
    )
    .await;
    // Two layers agree: one message at once, without waiting for a second confirmation.
    // Two layers agree: it fires without waiting for a second confirmation (the licence
    // warning that fires with it may share the message: one tenant's alerts within
    // `group_window` go out together, each listed in the body).
    let message = eventually(
        Duration::from_secs(60),
        "the Mailbox unreachable alert",
        || async {
            sink.requests().into_iter().find_map(|request| {
                let body: serde_json::Value = serde_json::from_str(&request.body).ok()?;
                let text = format!("{} {}", body["title"].as_str()?, body["body"].as_str()?);
                text.contains("Mailbox unreachable: ").then(|| body.clone())
            })
        },
    )
    .await;
    assert_ne!(message["kind"], "resolved", "{message}");
    assert!(
        message["body"].as_str().unwrap().contains("agree"),
        "{message}"
    );
    let firing_requests = sink
        .requests()
        .iter()
        .filter(|r| r.body.contains("Mailbox unreachable"))
        .count();
    assert_eq!(firing_requests, 1, "the agreed alert went out once");

    // The evidence: the DSN's status, diagnostic code and reporting MTA; no relay password.
    let store = Store::open(&db_path).await.unwrap();
    let history = store
        .observations(Some("contoso"), Some(CheckKind::Mailflow), Some(ADMIN), 20)
        .await
        .unwrap();
    let bounced = history
        .iter()
        .find(|o| o.status == Status::Critical)
        .expect("the bounce stored");
    assert_eq!(bounced.reason, Reason::MailBounced);
    let Evidence::Mailflow(evidence) = &bounced.evidence else {
        panic!("mailflow evidence expected, got {:?}", bounced.evidence)
    };
    let json = serde_json::to_string(evidence).unwrap();
    assert!(json.contains("5.1.10"), "{json}");
    assert!(json.contains("RecipientNotFound"), "{json}");
    assert!(!json.contains(RELAY_PASSWORD), "{json}");
    assert!(!daemon
        .logs()
        .iter()
        .any(|line| line.contains(RELAY_PASSWORD)));
    store.close().await;
}
