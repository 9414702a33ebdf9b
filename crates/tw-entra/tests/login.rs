//! The credential-free and sign-in checks against the Entra simulator over real HTTPS:
//! OpenID discovery (`tenant`), user realm (`realm`), the client-credentials token endpoint
//! (token cache, `signin`), and the rule that no secret, key or token ever reaches Debug output
//! or evidence.
// Test helpers beside the #[test] functions unwrap too; a failed set-up must fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tw_core::config::{AppConfig, AppCredential, SecretSource};
use tw_core::{DomainName, EmailAddress, Reason, Secret, Timestamp};
use tw_entra::credentials::{CredentialError, CredentialKind, LoadedApp};
use tw_entra::token::TokenCache;
use tw_entra::{discovery, realm, signin, Outcome};
use tw_sim::entra::{EntraSim, Fault, FaultKind, SimCredential, SimServer, SimTenant};
use tw_sim::tls::TestCa;

const TENANT_A: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const TENANT_B: &str = "7b1d9e20-0000-4000-8000-0000000b0b0b";
const CLIENT_ID: &str = "0a1b2c3d-0000-4000-8000-00000000a11e";
/// A secret value that must never show up anywhere it is not sent.
const CANARY: &str = "canary-Secret-7f3e9q~value";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

struct World {
    sim: EntraSim,
    client: reqwest::Client,
    _stop: DropGuard,
}

impl World {
    async fn start() -> World {
        let ca = TestCa::generate().expect("test CA");
        let shutdown = CancellationToken::new();
        let sim = EntraSim::start(&ca, shutdown.clone())
            .await
            .expect("simulator");
        let client = tw_entra::http::build_client(Some(ca.ca_cert_pem.as_bytes())).expect("client");
        sim.add_tenant(SimTenant::managed(
            TENANT_A,
            "Contoso",
            &["contoso.test", "contoso.onmicrosoft.test"],
        ));
        sim.add_tenant(SimTenant::managed(TENANT_B, "Fabrikam", &["fabrikam.test"]));
        World {
            sim,
            client,
            _stop: shutdown.drop_guard(),
        }
    }

    fn login(&self) -> String {
        self.sim.login_url()
    }

    async fn tenant(&self, domain: &str, expected: Option<&str>) -> Outcome {
        discovery::tenant(
            &self.client,
            &self.login(),
            &DomainName::parse(domain).unwrap(),
            expected,
            deadline(),
        )
        .await
    }

    async fn realm(&self, address: &str, previous: Option<&str>) -> Outcome {
        realm::realm(
            &self.client,
            &self.login(),
            &EmailAddress::parse(address).unwrap(),
            previous,
            deadline(),
        )
        .await
    }

    async fn signin(&self, cache: &TokenCache, tenant: &str, app: &LoadedApp) -> Outcome {
        self.signin_expiring(cache, tenant, app, None).await
    }

    async fn signin_expiring(
        &self,
        cache: &TokenCache,
        tenant: &str,
        app: &LoadedApp,
        expires: Option<Timestamp>,
    ) -> Outcome {
        signin::signin(
            cache,
            &self.client,
            &self.login(),
            tenant,
            "contoso",
            app,
            expires,
            30,
            Timestamp::now(),
            deadline(),
        )
        .await
    }

    /// Token endpoint requests the simulator saw.
    fn token_requests(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.server == SimServer::Login && r.path.ends_with("/oauth2/v2.0/token"))
            .count()
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tw-sim/fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn secret_app() -> LoadedApp {
    LoadedApp::with_secret(CLIENT_ID, Secret::new(CANARY))
}

/// The app with its certificate and key, loaded the way the daemon loads it: the certificate
/// from a file, the key from an environment variable.
fn certificate_app(cert: &str, key: &str) -> LoadedApp {
    let key_pem = read_fixture(key);
    let config = AppConfig {
        client_id: CLIENT_ID.to_owned(),
        credential: AppCredential::Certificate {
            certificate_file: fixture(cert),
            private_key: SecretSource::Env("TW_TEST_APP_KEY".to_owned()),
        },
        credential_expires: None,
    };
    let env = move |name: &str| (name == "TW_TEST_APP_KEY").then(|| key_pem.clone());
    LoadedApp::load(&config, &env).expect("certificate app")
}

fn fact<'a>(outcome: &'a Outcome, name: &str) -> &'a str {
    outcome
        .evidence
        .facts
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no fact {name} in {outcome:#?}"))
}

// --- tenant (OpenID discovery) ------------------------------------------------------------

#[tokio::test]
async fn known_tenant_reports_its_id_and_region() {
    let world = World::start().await;
    let outcome = world.tenant("contoso.test", Some(TENANT_A)).await;
    assert_eq!(outcome.reason, Reason::TenantKnown, "{outcome:#?}");
    assert_eq!(outcome.target, "contoso.test");
    assert_eq!(fact(&outcome, "tenant_id"), TENANT_A);
    assert_eq!(fact(&outcome, "tenant_region_scope"), "EU");
    assert_eq!(fact(&outcome, "cloud_instance_name"), "microsoftonline.com");
    assert_eq!(fact(&outcome, "msgraph_host"), "graph.microsoft.com");
    let [exchange] = outcome.evidence.exchanges.as_slice() else {
        panic!("one exchange expected: {outcome:#?}");
    };
    assert_eq!(exchange.status, Some(200));
    assert_eq!(
        exchange.url,
        format!(
            "{}/contoso.test/v2.0/.well-known/openid-configuration",
            world.login()
        )
    );
    assert!(exchange.request_id.is_some(), "{exchange:#?}");
    // The client-request-id the probe sent is the one the simulator logged.
    let logged = world.sim.requests();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].client_request_id, exchange.client_request_id);

    // Without an expectation a known domain is simply known; case does not matter.
    let outcome = world
        .tenant("contoso.onmicrosoft.test", Some(&TENANT_A.to_uppercase()))
        .await;
    assert_eq!(outcome.reason, Reason::TenantKnown, "{outcome:#?}");
    let outcome = world.tenant("fabrikam.test", None).await;
    assert_eq!(outcome.reason, Reason::TenantKnown);
    assert_eq!(fact(&outcome, "tenant_id"), TENANT_B);
}

#[tokio::test]
async fn domain_moved_to_another_tenant_is_critical() {
    let world = World::start().await;
    world.sim.move_domain("contoso.test", TENANT_B);
    let outcome = world.tenant("contoso.test", Some(TENANT_A)).await;
    assert_eq!(outcome.reason, Reason::TenantMoved, "{outcome:#?}");
    assert!(
        outcome.summary.contains(TENANT_A) && outcome.summary.contains(TENANT_B),
        "{}",
        outcome.summary
    );
    assert_eq!(fact(&outcome, "tenant_id"), TENANT_B);
}

#[tokio::test]
async fn unknown_domain_and_removed_tenant_are_aadsts90002() {
    let world = World::start().await;
    let outcome = world.tenant("nobody.test", None).await;
    assert_eq!(outcome.reason, Reason::TenantUnknown, "{outcome:#?}");
    assert!(outcome.summary.contains("90002"), "{}", outcome.summary);
    let exchange = &outcome.evidence.exchanges[0];
    assert_eq!(exchange.status, Some(400));
    assert_eq!(exchange.aadsts, vec![90002]);
    assert_eq!(exchange.error_code.as_deref(), Some("invalid_tenant"));
    assert!(exchange.trace_id.is_some() && exchange.correlation_id.is_some());
    assert_eq!(exchange.trace_id, exchange.request_id);

    world.sim.remove_tenant(TENANT_A);
    let outcome = world.tenant("contoso.test", Some(TENANT_A)).await;
    assert_eq!(outcome.reason, Reason::TenantUnknown, "{outcome:#?}");
}

#[tokio::test]
async fn server_errors_and_throttling_are_unknown() {
    let world = World::start().await;
    world.sim.inject(Fault::once(
        "openid-configuration",
        FaultKind::Unavailable {
            retry_after_s: None,
        },
    ));
    let outcome = world.tenant("contoso.test", Some(TENANT_A)).await;
    assert_eq!(outcome.reason, Reason::ServiceUnavailable, "{outcome:#?}");
    assert!(outcome.summary.contains("503"), "{}", outcome.summary);

    world.sim.inject(Fault::once(
        "openid-configuration",
        FaultKind::GatewayTimeout,
    ));
    let outcome = world.tenant("contoso.test", Some(TENANT_A)).await;
    assert_eq!(outcome.reason, Reason::ServiceUnavailable, "{outcome:#?}");

    world.sim.inject(Fault::once(
        "openid-configuration",
        FaultKind::TooManyRequests {
            retry_after_s: Some(7),
        },
    ));
    let outcome = world.tenant("contoso.test", Some(TENANT_A)).await;
    assert_eq!(outcome.reason, Reason::Throttled, "{outcome:#?}");
    assert_eq!(outcome.evidence.exchanges[0].retry_after_s, Some(7));

    // The faults are used up: the next answer is the real one.
    let outcome = world.tenant("contoso.test", Some(TENANT_A)).await;
    assert_eq!(outcome.reason, Reason::TenantKnown);
}

#[tokio::test]
async fn malformed_and_truncated_documents_are_unknown() {
    let world = World::start().await;
    for kind in [FaultKind::MalformedJson, FaultKind::TruncatedJson] {
        world
            .sim
            .inject(Fault::once("openid-configuration", kind.clone()));
        let outcome = world.tenant("contoso.test", Some(TENANT_A)).await;
        assert_eq!(
            outcome.reason,
            Reason::MalformedResponse,
            "{kind:?}: {outcome:#?}"
        );
        assert_eq!(outcome.reason.status(), tw_core::Status::Unknown);
        assert!(
            outcome.summary.contains("invalid JSON"),
            "{}",
            outcome.summary
        );
        assert!(outcome.evidence.exchanges[0].error.is_some());
        assert!(!outcome.evidence.facts.contains_key("tenant_id"));
    }
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_failure() {
    let world = World::start().await;
    let other_ca = TestCa::generate().unwrap();
    let stranger = tw_entra::http::build_client(Some(other_ca.ca_cert_pem.as_bytes())).unwrap();
    let domain = DomainName::parse("contoso.test").unwrap();
    let outcome = discovery::tenant(
        &stranger,
        &world.login(),
        &domain,
        Some(TENANT_A),
        deadline(),
    )
    .await;
    assert_eq!(outcome.reason, Reason::TlsFailed, "{outcome:#?}");
    assert_eq!(outcome.evidence.exchanges[0].status, None);
    assert!(outcome.evidence.exchanges[0].error.is_some());
    // The trusted client still gets through: the failure was the certificate, not the sim.
    assert_eq!(
        world.tenant("contoso.test", Some(TENANT_A)).await.reason,
        Reason::TenantKnown
    );
}

#[tokio::test]
async fn a_slow_answer_ends_at_the_deadline() {
    let world = World::start().await;
    world.sim.inject(Fault::once(
        "openid-configuration",
        FaultKind::Delay(Duration::from_secs(3)),
    ));
    let domain = DomainName::parse("contoso.test").unwrap();
    let started = Instant::now();
    let outcome = discovery::tenant(
        &world.client,
        &world.login(),
        &domain,
        Some(TENANT_A),
        Instant::now() + Duration::from_millis(300),
    )
    .await;
    assert_eq!(outcome.reason, Reason::Timeout, "{outcome:#?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

// --- realm (user realm discovery) ---------------------------------------------------------

#[tokio::test]
async fn managed_and_federated_realms_are_ok() {
    let world = World::start().await;
    let outcome = world.realm("probe@contoso.test", None).await;
    assert_eq!(outcome.reason, Reason::RealmOk, "{outcome:#?}");
    assert_eq!(outcome.target, "probe@contoso.test");
    assert_eq!(fact(&outcome, "namespace_type"), "Managed");
    assert_eq!(fact(&outcome, "cloud_instance_name"), "microsoftonline.com");
    assert!(!outcome.evidence.facts.contains_key("auth_url_host"));
    let exchange = &outcome.evidence.exchanges[0];
    assert_eq!(
        exchange.url,
        format!(
            "{}/common/userrealm/probe@contoso.test?api-version=2.1",
            world.login()
        )
    );

    world.sim.set_namespace_type("fabrikam.test", "Federated");
    let outcome = world.realm("probe@fabrikam.test", Some("Federated")).await;
    assert_eq!(outcome.reason, Reason::RealmOk, "{outcome:#?}");
    assert_eq!(fact(&outcome, "namespace_type"), "Federated");
    // Host only: the AuthURL's query carries the user name.
    let host = fact(&outcome, "auth_url_host");
    assert!(
        !host.is_empty() && !host.contains('/') && !host.contains('?'),
        "{host}"
    );
}

#[tokio::test]
async fn unknown_realm_is_critical() {
    let world = World::start().await;
    let outcome = world.realm("probe@nobody.test", Some("Managed")).await;
    assert_eq!(outcome.reason, Reason::RealmUnknown, "{outcome:#?}");
    assert_eq!(fact(&outcome, "namespace_type"), "Unknown");
}

#[tokio::test]
async fn a_domain_in_an_unmanaged_viral_tenant_is_a_change_worth_a_warning() {
    let world = World::start().await;
    world.sim.set_viral("contoso.test", true);
    let outcome = world.realm("probe@contoso.test", Some("Managed")).await;
    assert_eq!(outcome.reason, Reason::RealmChanged, "{outcome:#?}");
    assert_eq!(fact(&outcome, "is_viral"), "true");
    world.sim.set_viral("contoso.test", false);
    let outcome = world.realm("probe@contoso.test", Some("Managed")).await;
    assert_eq!(outcome.reason, Reason::RealmOk, "{outcome:#?}");
}

#[tokio::test]
async fn namespace_type_drift_is_reported_both_ways() {
    let world = World::start().await;
    world.sim.set_namespace_type("contoso.test", "Federated");
    let outcome = world.realm("probe@contoso.test", Some("Managed")).await;
    assert_eq!(outcome.reason, Reason::RealmChanged, "{outcome:#?}");
    assert!(
        outcome.summary.contains("from Managed to Federated"),
        "{}",
        outcome.summary
    );
    assert_eq!(fact(&outcome, "previous_namespace_type"), "Managed");

    world.sim.set_namespace_type("contoso.test", "Managed");
    let outcome = world.realm("probe@contoso.test", Some("Federated")).await;
    assert_eq!(outcome.reason, Reason::RealmChanged, "{outcome:#?}");
    assert!(
        outcome.summary.contains("from Federated to Managed"),
        "{}",
        outcome.summary
    );
    // Same as before: no drift.
    let outcome = world.realm("probe@contoso.test", Some("Managed")).await;
    assert_eq!(outcome.reason, Reason::RealmOk);
}

#[tokio::test]
async fn realm_faults_are_unknown() {
    let world = World::start().await;
    world.sim.inject(Fault::once(
        "userrealm",
        FaultKind::Unavailable {
            retry_after_s: Some(2),
        },
    ));
    assert_eq!(
        world.realm("probe@contoso.test", None).await.reason,
        Reason::ServiceUnavailable
    );
    world
        .sim
        .inject(Fault::once("userrealm", FaultKind::TruncatedJson));
    assert_eq!(
        world.realm("probe@contoso.test", None).await.reason,
        Reason::MalformedResponse
    );
    world.sim.inject(Fault::once(
        "userrealm",
        FaultKind::TooManyRequests {
            retry_after_s: None,
        },
    ));
    assert_eq!(
        world.realm("probe@contoso.test", None).await.reason,
        Reason::Throttled
    );
}

// --- token and signin ---------------------------------------------------------------------

#[tokio::test]
async fn client_secret_gets_a_token() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    let cache = TokenCache::new(GRAPH_SCOPE);
    let app = secret_app();
    let outcome = world.signin(&cache, TENANT_A, &app).await;
    assert_eq!(outcome.reason, Reason::TokenIssued, "{outcome:#?}");
    assert_eq!(outcome.target, "contoso");
    assert_eq!(fact(&outcome, "tenant"), TENANT_A);
    assert_eq!(fact(&outcome, "credential"), "secret");
    assert_eq!(fact(&outcome, "from_cache"), "false");
    assert!(Timestamp::parse_utc(fact(&outcome, "token_expires_at")).is_some());
    assert!(Timestamp::parse_utc(fact(&outcome, "acquired_at")).is_some());
    let [exchange] = outcome.evidence.exchanges.as_slice() else {
        panic!("one exchange: {outcome:#?}");
    };
    assert_eq!(exchange.method, "POST");
    // The secret goes in the body; the evidence URL is the bare token endpoint.
    assert_eq!(
        exchange.url,
        format!("{}/{TENANT_A}/oauth2/v2.0/token", world.login())
    );
    assert_eq!(exchange.status, Some(200));
    let logged = world.sim.requests();
    assert_eq!(logged.len(), 1);
    assert!(logged[0].authorized, "{logged:?}");
    assert!(!logged[0].query.contains(CANARY));

    // The second check is served from the cache, without a request.
    let outcome = world.signin(&cache, TENANT_A, &app).await;
    assert_eq!(outcome.reason, Reason::TokenIssued);
    assert_eq!(fact(&outcome, "from_cache"), "true");
    assert!(outcome.evidence.exchanges.is_empty());
    assert_eq!(world.token_requests(), 1);
}

#[tokio::test]
async fn certificate_assertion_is_accepted() {
    let world = World::start().await;
    world
        .sim
        .register_app(TENANT_A, CLIENT_ID, SimCredential::test_app_certificate());
    let app = certificate_app("app.crt.pem", "app.key.pem");
    assert_eq!(app.kind(), CredentialKind::Certificate);

    // The assertion's header is PS256 with the SHA-256 thumbprint of the certificate's DER.
    let assertion = app
        .client_assertion(&world.login(), TENANT_A, Timestamp::now())
        .unwrap();
    let header = assertion.expose().split('.').next().unwrap().to_owned();
    use base64::Engine as _;
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    let der = pem::parse(read_fixture("app.crt.pem")).unwrap();
    use sha2::Digest as _;
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(der.contents()));
    assert_eq!(header["alg"], "PS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["x5t#S256"], thumbprint.as_str());
    assert_eq!(app.x5t_s256(), Some(thumbprint.as_str()));

    let cache = TokenCache::new(GRAPH_SCOPE);
    let outcome = world.signin(&cache, TENANT_A, &app).await;
    assert_eq!(outcome.reason, Reason::TokenIssued, "{outcome:#?}");
    assert_eq!(fact(&outcome, "credential"), "certificate");
    assert!(world.sim.requests()[0].authorized);
}

#[tokio::test]
async fn wrong_secret_and_unregistered_key_are_credential_invalid() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret("the-right-one".to_owned()),
    );
    let cache = TokenCache::new(GRAPH_SCOPE);
    let outcome = world.signin(&cache, TENANT_A, &secret_app()).await;
    assert_eq!(outcome.reason, Reason::CredentialInvalid, "{outcome:#?}");
    assert!(
        outcome.summary.contains("AADSTS7000215"),
        "{}",
        outcome.summary
    );
    assert_eq!(fact(&outcome, "aadsts"), "7000215");
    let exchange = &outcome.evidence.exchanges[0];
    assert_eq!(exchange.status, Some(401));
    assert_eq!(exchange.error_code.as_deref(), Some("invalid_client"));
    assert!(exchange.trace_id.is_some(), "{exchange:#?}");
    assert!(exchange.correlation_id.is_some(), "{exchange:#?}");

    // A failure is not cached: the next check asks again.
    let again = world.signin(&cache, TENANT_A, &secret_app()).await;
    assert_eq!(again.reason, Reason::CredentialInvalid);
    assert_eq!(world.token_requests(), 2);

    world
        .sim
        .register_app(TENANT_B, CLIENT_ID, SimCredential::test_app_certificate());
    let stranger = certificate_app("other.crt.pem", "other.key.pem");
    let outcome = world.signin(&cache, TENANT_B, &stranger).await;
    assert_eq!(outcome.reason, Reason::CredentialInvalid, "{outcome:#?}");
    assert_eq!(outcome.evidence.exchanges[0].aadsts, vec![700027]);
}

#[tokio::test]
async fn app_missing_from_the_tenant_is_monitor_access_lost() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    let cache = TokenCache::new(GRAPH_SCOPE);
    let outcome = world.signin(&cache, TENANT_B, &secret_app()).await;
    assert_eq!(outcome.reason, Reason::MonitorAccessLost, "{outcome:#?}");
    assert_eq!(outcome.evidence.exchanges[0].aadsts, vec![700016]);
    assert!(
        outcome.summary.contains("AADSTS700016"),
        "{}",
        outcome.summary
    );
}

#[tokio::test]
async fn token_for_a_vanished_tenant_is_tenant_unknown() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    world.sim.remove_tenant(TENANT_A);
    let cache = TokenCache::new(GRAPH_SCOPE);
    let outcome = world.signin(&cache, TENANT_A, &secret_app()).await;
    assert_eq!(outcome.reason, Reason::TenantUnknown, "{outcome:#?}");
    assert_eq!(outcome.evidence.exchanges[0].aadsts, vec![90002]);
}

#[tokio::test]
async fn forced_codes_are_classified_by_the_table() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    let cache = TokenCache::new(GRAPH_SCOPE);
    let app = secret_app();
    for (code, reason) in [
        (7000222, Reason::CredentialExpired),
        (53003, Reason::BlockedByPolicy),
        (500014, Reason::ServiceDisabled),
        (90055, Reason::Throttled),
        (700024, Reason::MonitorMisconfigured),
        (5000224, Reason::HttpError),
    ] {
        world.sim.set_token_error(TENANT_A, Some(code));
        let outcome = world.signin(&cache, TENANT_A, &app).await;
        assert_eq!(outcome.reason, reason, "AADSTS{code}: {outcome:#?}");
        assert_eq!(fact(&outcome, "aadsts"), code.to_string());
        assert!(
            outcome.summary.contains(&format!("AADSTS{code}")),
            "{}",
            outcome.summary
        );
        let exchange = &outcome.evidence.exchanges[0];
        assert!(exchange.trace_id.is_some() && exchange.correlation_id.is_some());
    }
    world.sim.set_token_error(TENANT_A, None);
    assert_eq!(
        world.signin(&cache, TENANT_A, &app).await.reason,
        Reason::TokenIssued
    );
}

#[tokio::test]
async fn one_token_request_per_lifetime() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    let cache = TokenCache::new(GRAPH_SCOPE);
    let app = secret_app();
    let mut fresh = 0;
    let mut values = Vec::new();
    for _ in 0..25 {
        let attempt = cache
            .get(&world.client, &world.login(), TENANT_A, &app, deadline())
            .await;
        let token = attempt.result.expect("token");
        fresh += usize::from(attempt.fresh);
        assert_eq!(attempt.exchanges.len(), usize::from(attempt.fresh));
        values.push(token.value.expose().to_owned());
    }
    assert_eq!(fresh, 1);
    assert!(values.iter().all(|v| *v == values[0] && !v.is_empty()));
    assert_eq!(world.token_requests(), 1);

    // Keys are case-insensitive; another tenant has its own token.
    world.sim.register_app(
        TENANT_B,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    let upper = cache
        .get(
            &world.client,
            &world.login(),
            &TENANT_A.to_uppercase(),
            &app,
            deadline(),
        )
        .await;
    assert!(!upper.fresh);
    let other = cache
        .get(&world.client, &world.login(), TENANT_B, &app, deadline())
        .await;
    assert!(other.fresh);
    assert_ne!(other.result.unwrap().value, upper.result.unwrap().value);
    assert_eq!(world.token_requests(), 2);

    // Invalidation forces the next request.
    cache.invalidate(TENANT_A);
    let renewed = cache
        .get(&world.client, &world.login(), TENANT_A, &app, deadline())
        .await;
    assert!(renewed.fresh);
    assert_eq!(world.token_requests(), 3);
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    // A 4 s token is renewed at half its life (2 s).
    world.sim.set_token_lifetime(4);
    let cache = TokenCache::new(GRAPH_SCOPE);
    let app = secret_app();
    let login = world.login();
    let get = || cache.get(&world.client, &login, TENANT_A, &app, deadline());
    let first = get().await;
    assert!(first.fresh);
    let first = first.result.unwrap();
    assert_eq!(
        first.expires_at.millis_since(first.acquired_at),
        4_000,
        "{first:?}"
    );
    assert!(!get().await.fresh);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let renewed = get().await;
    assert!(renewed.fresh, "{renewed:?}");
    assert_ne!(renewed.result.unwrap().value, first.value);
    assert!(!get().await.fresh);
    assert_eq!(world.token_requests(), 2);
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    // A slow token endpoint keeps the first request in flight while the others arrive.
    world.sim.inject(Fault::once(
        "/oauth2/v2.0/token",
        FaultKind::Delay(Duration::from_millis(300)),
    ));
    let cache = Arc::new(TokenCache::new(GRAPH_SCOPE));
    let app = Arc::new(secret_app());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (cache, app, client, login) = (
            cache.clone(),
            app.clone(),
            world.client.clone(),
            world.login(),
        );
        tasks.spawn(async move { cache.get(&client, &login, TENANT_A, &app, deadline()).await });
    }
    let mut fresh = 0;
    let mut values = std::collections::BTreeSet::new();
    while let Some(attempt) = tasks.join_next().await {
        let attempt = attempt.unwrap();
        fresh += usize::from(attempt.fresh);
        values.insert(attempt.result.expect("token").value.expose().to_owned());
    }
    assert_eq!(fresh, 1);
    assert_eq!(values.len(), 1);
    assert_eq!(world.token_requests(), 1);
}

#[tokio::test]
async fn credential_expiry_warns_ahead() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    let cache = TokenCache::new(GRAPH_SCOPE);
    let app = secret_app();
    let now = Timestamp::now();

    let soon = now.plus(Duration::from_secs(10 * 86_400 + 3_600));
    let outcome = world
        .signin_expiring(&cache, TENANT_A, &app, Some(soon))
        .await;
    assert_eq!(outcome.reason, Reason::CredentialExpiring, "{outcome:#?}");
    let date: String = soon.to_string().chars().take(10).collect();
    assert_eq!(
        outcome.summary,
        format!("client secret expires in 10 days on {date}")
    );
    assert_eq!(fact(&outcome, "credential_days_left"), "10");
    // The token itself was fine: its facts are still there.
    assert!(outcome.evidence.facts.contains_key("token_expires_at"));

    let passed = now.minus(Duration::from_secs(2 * 86_400));
    let outcome = world
        .signin_expiring(&cache, TENANT_A, &app, Some(passed))
        .await;
    assert_eq!(outcome.reason, Reason::CredentialExpiring, "{outcome:#?}");
    assert!(
        outcome.summary.contains("update credential_expires"),
        "{}",
        outcome.summary
    );

    let later = now.plus(Duration::from_secs(90 * 86_400));
    let outcome = world
        .signin_expiring(&cache, TENANT_A, &app, Some(later))
        .await;
    assert_eq!(outcome.reason, Reason::TokenIssued, "{outcome:#?}");
}

#[tokio::test]
async fn token_endpoint_faults_are_unknown() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    let cache = TokenCache::new(GRAPH_SCOPE);
    let app = secret_app();
    for (kind, reason) in [
        (
            FaultKind::Unavailable {
                retry_after_s: None,
            },
            Reason::ServiceUnavailable,
        ),
        (
            FaultKind::TooManyRequests {
                retry_after_s: Some(3),
            },
            Reason::Throttled,
        ),
        (FaultKind::MalformedJson, Reason::MalformedResponse),
        (FaultKind::TruncatedJson, Reason::MalformedResponse),
    ] {
        world
            .sim
            .inject(Fault::once("/oauth2/v2.0/token", kind.clone()));
        let outcome = world.signin(&cache, TENANT_A, &app).await;
        assert_eq!(outcome.reason, reason, "{kind:?}: {outcome:#?}");
    }
    assert_eq!(
        world.signin(&cache, TENANT_A, &app).await.reason,
        Reason::TokenIssued
    );
}

// --- credentials --------------------------------------------------------------------------

#[test]
fn loading_a_credential_names_the_source_never_the_content() {
    let no_env = |_: &str| None;
    let missing_file = AppConfig {
        client_id: CLIENT_ID.to_owned(),
        credential: AppCredential::Secret(SecretSource::File(PathBuf::from(
            "/nonexistent/tw-secret",
        ))),
        credential_expires: None,
    };
    let err = LoadedApp::load(&missing_file, &no_env).unwrap_err();
    assert!(matches!(err, CredentialError::File { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/tw-secret"), "{err}");

    let missing_env = AppConfig {
        credential: AppCredential::Secret(SecretSource::Env("TW_NOT_SET".to_owned())),
        ..missing_file.clone()
    };
    let err = LoadedApp::load(&missing_env, &no_env).unwrap_err();
    assert!(err.to_string().contains("TW_NOT_SET"), "{err}");

    // A secret file with a trailing newline: trimmed.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, format!("{CANARY}\n").as_bytes()).unwrap();
    let from_file = AppConfig {
        credential: AppCredential::Secret(SecretSource::File(file.path().to_owned())),
        credential_expires: Timestamp::parse_utc("2027-03-01"),
        ..missing_file.clone()
    };
    let app = LoadedApp::load(&from_file, &no_env).unwrap();
    assert_eq!(app.kind(), CredentialKind::Secret);
    assert_eq!(app.credential_expires(), Timestamp::parse_utc("2027-03-01"));
    let form = app
        .credential_form("https://login.test", TENANT_A, Timestamp::now())
        .unwrap();
    assert_eq!(form[0].0, "client_secret");
    assert_eq!(form[0].1.expose(), CANARY);

    // An empty secret is refused.
    let empty_env = |_: &str| Some("  \n".to_owned());
    let from_env = AppConfig {
        credential: AppCredential::Secret(SecretSource::Env("TW_EMPTY".to_owned())),
        ..missing_file.clone()
    };
    let err = LoadedApp::load(&from_env, &empty_env).unwrap_err();
    assert!(matches!(err, CredentialError::Empty { .. }), "{err:?}");

    // A private key that is not one: the error names the variable, not the content.
    let bogus_key = format!("-----BEGIN PRIVATE KEY-----\n{CANARY}\n-----END PRIVATE KEY-----\n");
    let bad_env = move |_: &str| Some(bogus_key.clone());
    let bad_key = AppConfig {
        credential: AppCredential::Certificate {
            certificate_file: fixture("app.crt.pem"),
            private_key: SecretSource::Env("TW_APP_KEY".to_owned()),
        },
        ..missing_file.clone()
    };
    let err = LoadedApp::load(&bad_key, &bad_env).unwrap_err();
    assert!(matches!(err, CredentialError::InvalidKey { .. }), "{err:?}");
    assert!(err.to_string().contains("TW_APP_KEY"), "{err}");
    assert!(!err.to_string().contains(CANARY) && !format!("{err:?}").contains(CANARY));

    // A key file given as the certificate: no CERTIFICATE block.
    let key_pem = read_fixture("app.key.pem");
    let key_env = move |_: &str| Some(key_pem.clone());
    let swapped = AppConfig {
        credential: AppCredential::Certificate {
            certificate_file: fixture("app.key.pem"),
            private_key: SecretSource::Env("TW_APP_KEY".to_owned()),
        },
        ..missing_file
    };
    let err = LoadedApp::load(&swapped, &key_env).unwrap_err();
    assert!(
        matches!(err, CredentialError::NoCertificate { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
}

// --- nothing secret leaks -----------------------------------------------------------------

#[tokio::test]
async fn no_secret_key_assertion_or_token_in_debug_or_evidence() {
    let world = World::start().await;
    world.sim.register_app(
        TENANT_A,
        CLIENT_ID,
        SimCredential::Secret(CANARY.to_owned()),
    );
    world
        .sim
        .register_app(TENANT_B, CLIENT_ID, SimCredential::test_app_certificate());
    let cache = TokenCache::new(GRAPH_SCOPE);
    let secret = secret_app();
    let certificate = certificate_app("app.crt.pem", "app.key.pem");
    // Lines of the private key's base64 body: none may appear anywhere.
    let key_lines: Vec<String> = read_fixture("app.key.pem")
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    let assertion = certificate
        .client_assertion(&world.login(), TENANT_B, Timestamp::now())
        .unwrap();
    let assertion_signature = assertion.expose().rsplit('.').next().unwrap().to_owned();

    let mut rendered = Vec::new();
    let mut tokens = Vec::new();
    for (tenant, app) in [(TENANT_A, &secret), (TENANT_B, &certificate)] {
        let attempt = cache
            .get(&world.client, &world.login(), tenant, app, deadline())
            .await;
        rendered.push(format!("{attempt:?}"));
        let token = attempt.result.clone().expect("token");
        rendered.push(format!("{token:?} {:?} {}", token.value, token.value));
        tokens.push(token.value.expose().to_owned());
        let outcome = world.signin(&cache, tenant, app).await;
        rendered.push(format!("{outcome:?} {outcome:#?}"));
        rendered.push(serde_json::to_string(&outcome.evidence).unwrap());
    }
    // Failures too: a wrong secret, a forced expiry.
    let wrong = LoadedApp::with_secret(CLIENT_ID, Secret::new(format!("{CANARY}-wrong")));
    let outcome = world.signin(&cache, "fabrikam.test", &wrong).await;
    assert_ne!(outcome.reason, Reason::TokenIssued);
    rendered.push(format!("{outcome:?}"));
    rendered.push(serde_json::to_string(&outcome.evidence).unwrap());
    world.sim.set_token_error(TENANT_A, Some(7000222));
    cache.invalidate(TENANT_A);
    let outcome = world.signin(&cache, TENANT_A, &secret).await;
    assert_eq!(outcome.reason, Reason::CredentialExpired);
    rendered.push(format!("{outcome:?}"));
    rendered.push(serde_json::to_string(&outcome.evidence).unwrap());
    rendered.push(format!(
        "{secret:?} {certificate:?} {cache:?} {assertion:?}"
    ));
    rendered.push(format!(
        "{:?}",
        tw_entra::rdap::RdapClient::fixed("https://x")
    ));

    let all = rendered.join("\n");
    assert!(!all.contains(CANARY), "secret leaked:\n{all}");
    assert!(!all.contains(&assertion_signature), "assertion leaked");
    for token in &tokens {
        assert!(!token.is_empty());
        assert!(!all.contains(token.as_str()), "access token leaked:\n{all}");
    }
    for line in &key_lines {
        assert!(!all.contains(line.as_str()), "private key leaked");
    }
    // The rendering is not empty: the check above could not pass vacuously.
    assert!(all.contains("token_issued") || all.contains("TokenIssued"));
    assert!(all.contains("credential_expired") || all.contains("CredentialExpired"));
}

#[test]
fn a_certificate_says_when_it_expires() {
    // `openssl x509 -enddate` of fixtures/app.crt.pem: notAfter=Oct 30 15:44:35 2126 GMT.
    let not_after = tw_entra::credentials::certificate_not_after(tw_sim::entra::TEST_APP_CERT_PEM)
        .expect("notAfter parsed");
    assert_eq!(not_after.to_string(), "2126-10-30T15:44:35.000Z");
    assert_eq!(
        tw_entra::credentials::certificate_not_after("not a certificate"),
        None
    );
}
