//! The HTTP checks wired into the scheduler's job runner: a parsed config (endpoints pointing
//! at the Entra simulator, the app secret in a file) through `plan` and `run_job`, over real
//! loopback HTTPS. Each probe's verdict table is tested in crates/tw-entra; this file checks
//! what the wiring adds: every check is planned and run with the right subject, the tenant's
//! app and token, the object id learned at first sight and used after, `no_token` for the
//! Graph checks when the token endpoint refuses, and secrets never reaching an observation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;

use tempfile::NamedTempFile;
use tokio_util::sync::CancellationToken;
use tw_core::config::Config;
use tw_core::{CheckKind, Evidence, Observation, Reason, Timestamp};
use tw_probe::{plan, run_job, Clients, ProbeMemory};
use tw_sim::entra::{EntraSim, HealthyTenant, SimServer};
use tw_sim::tls::TestCa;

const TENANT_ID: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const SECRET: &str = "canary-secret-Zq8~never-in-evidence";
const ADMIN_ID: &str = "87d349ed-0000-4000-8000-5f2406dee5bd";
const ADMIN: &str = "admin@contoso.example";
const SALES_ID: &str = "97d349ed-0000-4000-8000-5f2406dee5be";
const SALES: &str = "sales@contoso.example";

struct Fixture {
    sim: EntraSim,
    config: Config,
    _ca_file: NamedTempFile,
    _secret_file: NamedTempFile,
    _stop: tokio_util::sync::DropGuard,
}

async fn fixture() -> Fixture {
    let ca = TestCa::generate().unwrap();
    let stop = CancellationToken::new();
    let sim = EntraSim::start(&ca, stop.clone()).await.unwrap();
    sim.add_healthy_tenant(&HealthyTenant {
        tenant_id: TENANT_ID,
        display_name: "Contoso",
        domains: &["contoso.example"],
        users: &[(ADMIN_ID, ADMIN), (SALES_ID, SALES)],
        client_id: CLIENT_ID,
        client_secret: SECRET,
    });
    let mut ca_file = NamedTempFile::new().unwrap();
    ca_file.write_all(ca.ca_cert_pem.as_bytes()).unwrap();
    let mut secret_file = NamedTempFile::new().unwrap();
    secret_file.write_all(SECRET.as_bytes()).unwrap();
    let text = format!(
        r#"
[smtp]
helo_name = "probe.msp.example"
mail_from = "probe@msp.example"

{entra}
[app]
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"

[checks.dns]
enabled = false
[checks.smtp_rcpt]
enabled = false

[[tenants]]
name = "contoso"
domain = "contoso.example"
tenant_id = "{TENANT_ID}"
watch = ["{ADMIN}", "{SALES}"]
"#,
        entra = sim.config_section(ca_file.path()),
        secret = secret_file.path().display(),
    );
    let config = tw_core::config::parse(&text).unwrap_or_else(|errors| panic!("{errors}"));
    Fixture {
        sim,
        config,
        _ca_file: ca_file,
        _secret_file: secret_file,
        _stop: stop.drop_guard(),
    }
}

/// Runs every planned job once, in plan order (identity before licence, as the scheduler's
/// first cycle would at equal phase), and returns (check, target) → observation.
async fn run_all(
    config: &Config,
    clients: &Clients,
    memory: &ProbeMemory,
) -> BTreeMap<(CheckKind, String), Observation> {
    let mut seen = BTreeMap::new();
    for job in plan(config) {
        for observation in run_job(&job, clients, memory, Timestamp::now()).await {
            assert_eq!(observation.status, observation.reason.status());
            seen.insert((observation.check, observation.target.clone()), observation);
        }
    }
    seen
}

fn reason(
    seen: &BTreeMap<(CheckKind, String), Observation>,
    check: CheckKind,
    target: &str,
) -> Reason {
    seen.get(&(check, target.to_owned()))
        .unwrap_or_else(|| panic!("no {check} observation for {target}: {:?}", seen.keys()))
        .reason
}

#[tokio::test]
async fn every_http_check_is_planned_run_and_ok_for_a_healthy_tenant() {
    let fixture = fixture().await;
    let clients = Clients::from_config(&fixture.config).unwrap();
    let memory = ProbeMemory::default();
    let seen = run_all(&fixture.config, &clients, &memory).await;

    let expected = [
        (CheckKind::Tenant, "contoso.example", Reason::TenantKnown),
        (CheckKind::Domain, "contoso.example", Reason::RegistrationOk),
        (CheckKind::Realm, ADMIN, Reason::RealmOk),
        (CheckKind::Realm, SALES, Reason::RealmOk),
        (CheckKind::Signin, "contoso", Reason::TokenIssued),
        (CheckKind::Identity, ADMIN, Reason::IdentityOk),
        (CheckKind::Identity, SALES, Reason::IdentityOk),
        (CheckKind::Licence, "contoso", Reason::LicencesOk),
        (CheckKind::Licence, ADMIN, Reason::LicencesOk),
        (CheckKind::Licence, SALES, Reason::LicencesOk),
        (CheckKind::Admins, "contoso", Reason::AdminsOk),
        (CheckKind::Health, "contoso", Reason::ServiceOperational),
    ];
    for (check, target, want) in expected {
        assert_eq!(
            reason(&seen, check, target),
            want,
            "{check} {target}: {:?}",
            seen[&(check, target.to_owned())].summary
        );
    }
    assert_eq!(seen.len(), expected.len(), "{:?}", seen.keys());

    // One token request served the signin check and all four Graph checks.
    let token_requests = fixture
        .sim
        .requests()
        .iter()
        .filter(|r| r.server == SimServer::Login && r.path.ends_with("/oauth2/v2.0/token"))
        .count();
    assert_eq!(token_requests, 1);
    // The object ids were learned.
    assert_eq!(
        memory
            .fact("contoso", CheckKind::Identity, ADMIN, "object_id")
            .as_deref(),
        Some(ADMIN_ID)
    );

    // The secret appears in no observation, summary or evidence.
    for observation in seen.values() {
        let Evidence::Http(evidence) = &observation.evidence else {
            panic!("{} carries {:?}", observation.check, observation.evidence);
        };
        let json = serde_json::to_string(evidence).unwrap();
        assert!(
            !json.contains(SECRET) && !observation.summary.contains(SECRET),
            "{json}"
        );
    }
}

#[tokio::test]
async fn a_deleted_identity_is_found_by_its_learned_id_in_deleted_items() {
    let fixture = fixture().await;
    let clients = Clients::from_config(&fixture.config).unwrap();
    let memory = ProbeMemory::default();
    run_all(&fixture.config, &clients, &memory).await;

    fixture.sim.delete_user(TENANT_ID, ADMIN_ID);
    fixture.sim.clear_requests();
    let seen = run_all(&fixture.config, &clients, &memory).await;
    assert_eq!(
        reason(&seen, CheckKind::Identity, ADMIN),
        Reason::IdentityDeleted
    );
    let identity = &seen[&(CheckKind::Identity, ADMIN.to_owned())];
    assert!(
        identity.summary.contains("restorable until"),
        "{}",
        identity.summary
    );
    assert_eq!(
        reason(&seen, CheckKind::Identity, SALES),
        Reason::IdentityOk
    );
    // Looked up by id, not by the (now mangled) UPN.
    let paths: Vec<String> = fixture
        .sim
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with(&format!("/users/{ADMIN_ID}"))),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with(&format!("/directory/deletedItems/{ADMIN_ID}"))),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("/users/admin@")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_refused_token_is_one_signin_verdict_and_no_token_for_the_graph_checks() {
    let fixture = fixture().await;
    fixture.sim.set_token_error(TENANT_ID, Some(700016));
    let clients = Clients::from_config(&fixture.config).unwrap();
    let seen = run_all(&fixture.config, &clients, &ProbeMemory::default()).await;
    assert_eq!(
        reason(&seen, CheckKind::Signin, "contoso"),
        Reason::MonitorAccessLost
    );
    for (check, target) in [
        (CheckKind::Identity, ADMIN),
        (CheckKind::Licence, "contoso"),
        (CheckKind::Licence, SALES),
        (CheckKind::Admins, "contoso"),
        (CheckKind::Health, "contoso"),
    ] {
        let observation = &seen[&(check, target.to_owned())];
        assert_eq!(observation.reason, Reason::NoToken, "{check} {target}");
        let Evidence::Http(evidence) = &observation.evidence else {
            panic!()
        };
        assert_eq!(
            evidence.exchanges.last().and_then(|e| e.aadsts.first()),
            Some(&700016)
        );
    }
    // The credential-free checks do not care.
    assert_eq!(
        reason(&seen, CheckKind::Tenant, "contoso.example"),
        Reason::TenantKnown
    );
}

#[tokio::test]
async fn a_missing_secret_file_stops_the_clients_with_the_tenant_named_and_no_content() {
    let fixture = fixture().await;
    let mut config = fixture.config.clone();
    if let Some(app) = config.tenants[0].app.as_mut() {
        app.credential = tw_core::config::AppCredential::Secret(
            tw_core::config::SecretSource::File("/nonexistent/tenantwatch-secret".into()),
        );
    }
    let Err(err) = Clients::from_config(&config) else {
        panic!("a missing secret file must stop the start");
    };
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(text.contains("contoso"), "{text}");
    assert!(text.contains("/nonexistent/tenantwatch-secret"), "{text}");
}

#[tokio::test]
async fn a_token_graph_refuses_is_dropped_so_signin_asks_again() {
    let fixture = fixture().await;
    let clients = Clients::from_config(&fixture.config).unwrap();
    let memory = ProbeMemory::default();
    run_all(&fixture.config, &clients, &memory).await;

    // The tenant goes away: Graph refuses the cached token (401).
    fixture.sim.remove_tenant(TENANT_ID);
    let jobs = plan(&fixture.config);
    let identity = jobs
        .iter()
        .find(|job| job.check == CheckKind::Identity)
        .unwrap();
    let seen = run_job(identity, &clients, &memory, Timestamp::now()).await;
    let Evidence::Http(evidence) = &seen[0].evidence else {
        panic!()
    };
    assert_eq!(evidence.exchanges[0].status, Some(401), "{evidence:?}");

    // Without the refused token in the cache, signin asks Entra, which no longer knows the
    // tenant, instead of reporting the cached token as fine for the rest of its hour.
    let signin = jobs
        .iter()
        .find(|job| job.check == CheckKind::Signin)
        .unwrap();
    let seen = run_job(signin, &clients, &memory, Timestamp::now()).await;
    assert_eq!(seen[0].reason, Reason::TenantUnknown, "{}", seen[0].summary);
}
