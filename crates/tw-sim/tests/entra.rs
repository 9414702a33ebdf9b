//! Drives the Entra/Graph/RDAP simulator over real loopback HTTPS with reqwest, the way the
//! probes do, so the fake is held to the reference (field names, status codes, error shapes,
//! headers, assertion verification, paging, faults) before probes are tested against it.

// clippy's allow-unwrap-in-tests covers `#[test]` functions but not the helpers beside them; in
// this file every function is test code, and a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, Response, StatusCode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio_util::sync::{CancellationToken, DropGuard};
use tw_sim::entra::{
    EntraSim, Fault, FaultKind, SimCredential, SimRdap, SimServer, SimTenant, TEST_APP_CERT_PEM,
    TEST_APP_KEY_PEM, TEST_OTHER_CERT_PEM, TEST_OTHER_KEY_PEM,
};
use tw_sim::tls::TestCa;

const TID: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const OTHER_TID: &str = "7b1e0d55-0000-4000-8000-0000000beef0";
const CLIENT_ID: &str = "6731de76-0000-4000-8000-00000000a991";
const SECRET: &str = "sim-secret-value~1";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Fixture {
    sim: EntraSim,
    http: Client,
    _stop: DropGuard,
}

async fn start() -> Fixture {
    let ca = TestCa::generate().unwrap();
    let shutdown = CancellationToken::new();
    let sim = EntraSim::start(&ca, shutdown.clone()).await.unwrap();
    let http = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_cert_pem.as_bytes()).unwrap())
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    sim.add_tenant(SimTenant::managed(
        TID,
        "Contoso",
        &["contoso.com", "contoso.onmicrosoft.com"],
    ));
    sim.add_tenant(SimTenant::managed(OTHER_TID, "Fabrikam", &["fabrikam.com"]));
    sim.register_app(TID, CLIENT_ID, SimCredential::Secret(SECRET.to_owned()));
    sim.register_app(TID, CLIENT_ID, SimCredential::test_app_certificate());
    Fixture {
        sim,
        http,
        _stop: shutdown.drop_guard(),
    }
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// The JSON body of a GET.
async fn response_json(f: &Fixture, url: &str) -> Value {
    f.http.get(url).send().await.unwrap().json().await.unwrap()
}

fn discovery_url(f: &Fixture, tenant: &str) -> String {
    format!(
        "{}/{tenant}/v2.0/.well-known/openid-configuration",
        f.sim.login_url()
    )
}

fn token_url(f: &Fixture, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/token", f.sim.login_url())
}

async fn token_with_secret(f: &Fixture, tenant: &str, client_id: &str, secret: &str) -> Response {
    f.http
        .post(token_url(f, tenant))
        .header("client-request-id", "0d1e2f30-0000-4000-8000-0000000c1e47")
        .form(&[
            ("client_id", client_id),
            ("scope", GRAPH_SCOPE),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
}

async fn token_with_assertion(f: &Fixture, tenant: &str, assertion: &str) -> Response {
    f.http
        .post(token_url(f, tenant))
        .form(&[
            ("client_id", CLIENT_ID),
            ("scope", GRAPH_SCOPE),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
}

fn now_s() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn thumbprint(cert_pem: &str, sha256: bool) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let algorithm = if sha256 {
        &ring::digest::SHA256
    } else {
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY
    };
    URL_SAFE_NO_PAD.encode(ring::digest::digest(algorithm, der.as_ref()).as_ref())
}

struct Assertion<'a> {
    alg: Algorithm,
    key_pem: &'a str,
    /// The certificate whose thumbprint goes into the header.
    cert_pem: &'a str,
    legacy_x5t: bool,
    aud: String,
    nbf: i64,
    exp: i64,
}

impl Assertion<'_> {
    fn valid(f: &Fixture, alg: Algorithm) -> Assertion<'static> {
        Assertion {
            alg,
            key_pem: TEST_APP_KEY_PEM,
            cert_pem: TEST_APP_CERT_PEM,
            legacy_x5t: false,
            aud: token_url(f, TID),
            nbf: now_s() - 5,
            exp: now_s() + 600,
        }
    }

    fn sign(&self) -> String {
        let mut header = Header::new(self.alg);
        header.typ = Some("JWT".to_owned());
        if self.legacy_x5t {
            header.x5t = Some(thumbprint(self.cert_pem, false));
        } else {
            header.x5t_s256 = Some(thumbprint(self.cert_pem, true));
        }
        let claims = json!({
            "aud": self.aud, "iss": CLIENT_ID, "sub": CLIENT_ID,
            "jti": "5e1f0000-0000-4000-8000-00000000a55e",
            "nbf": self.nbf, "exp": self.exp, "iat": self.nbf,
        });
        let key = EncodingKey::from_rsa_pem(self.key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// Asserts an Entra OAuth error body and returns it.
async fn assert_login_error(response: Response, status: u16, error: &str, code: u32) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let request_id = header(&response, "x-ms-request-id").expect("x-ms-request-id");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    assert_eq!(body["trace_id"], request_id.as_str());
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    assert!(
        description.contains("\r\nCorrelation ID: "),
        "{description}"
    );
    assert!(description.contains("\r\nTimestamp: "), "{description}");
    for field in ["timestamp", "correlation_id", "error_uri"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    body
}

// ---------------------------------------------------------------------------------------------
// Discovery and realm

#[tokio::test]
async fn discovery_by_tenant_id_and_domain() {
    let f = start().await;
    let response = f.http.get(discovery_url(&f, TID)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("max-age=86400, private")
    );
    assert!(header(&response, "x-ms-request-id").is_some());
    let body: Value = response.json().await.unwrap();
    let login = f.sim.login_url();
    assert_eq!(body["issuer"], format!("{login}/{TID}/v2.0"));
    assert_eq!(
        body["token_endpoint"],
        format!("{login}/{TID}/oauth2/v2.0/token")
    );
    assert_eq!(body["tenant_region_scope"], "EU");
    assert_eq!(body["cloud_instance_name"], "microsoftonline.com");
    assert_eq!(body["msgraph_host"], "graph.microsoft.com");

    let by_domain = response_json(&f, &discovery_url(&f, "CONTOSO.com")).await;
    assert_eq!(by_domain["issuer"], format!("{login}/{TID}/v2.0"));
    let fabrikam = response_json(&f, &discovery_url(&f, "fabrikam.com")).await;
    assert_eq!(fabrikam["issuer"], format!("{login}/{OTHER_TID}/v2.0"));
}

#[tokio::test]
async fn discovery_of_unknown_removed_and_moved() {
    let f = start().await;
    let response = f
        .http
        .get(discovery_url(&f, "contoso-gone.com"))
        .header("client-request-id", "c1b9b8e2-0000-4000-8000-00006fc79269")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("max-age=86400, private")
    );
    let body = assert_login_error(response, 400, "invalid_tenant", 90002).await;
    assert_eq!(
        body["correlation_id"],
        "c1b9b8e2-0000-4000-8000-00006fc79269"
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("'contoso-gone.com'"));

    f.sim.move_domain("contoso.com", OTHER_TID);
    let moved = response_json(&f, &discovery_url(&f, "contoso.com")).await;
    assert_eq!(
        moved["issuer"],
        format!("{}/{OTHER_TID}/v2.0", f.sim.login_url())
    );

    f.sim.remove_tenant(TID);
    let by_id = f.http.get(discovery_url(&f, TID)).send().await.unwrap();
    assert_login_error(by_id, 400, "invalid_tenant", 90002).await;
    let by_domain = f
        .http
        .get(discovery_url(&f, "contoso.onmicrosoft.com"))
        .send()
        .await
        .unwrap();
    assert_login_error(by_domain, 400, "invalid_tenant", 90002).await;
}

#[tokio::test]
async fn user_realm_managed_federated_unknown() {
    let f = start().await;
    let realm = |login: &str| {
        format!(
            "{}/common/userrealm/{login}?api-version=2.1",
            f.sim.login_url()
        )
    };
    let managed = response_json(&f, &realm("probe@contoso.com")).await;
    assert_eq!(managed["NameSpaceType"], "Managed");
    assert_eq!(managed["Login"], "probe@contoso.com");
    assert_eq!(managed["DomainName"], "contoso.com");
    assert_eq!(managed["FederationBrandName"], "Contoso");
    assert_eq!(managed["cloud_instance_name"], "microsoftonline.com");
    assert!(managed.get("AuthURL").is_none());

    f.sim.set_namespace_type("contoso.com", "Federated");
    let federated = response_json(&f, &realm("probe@contoso.com")).await;
    assert_eq!(federated["NameSpaceType"], "Federated");
    assert!(federated["AuthURL"]
        .as_str()
        .unwrap()
        .contains("username=probe%40contoso.com"));
    assert_eq!(federated["federation_protocol"], "WSTrust");

    let unknown = response_json(&f, &realm("probe@unknown-example.com")).await;
    assert_eq!(
        unknown,
        json!({"NameSpaceType": "Unknown", "Login": "probe@unknown-example.com",
               "cloud_instance_name": "microsoftonline.com"})
    );
    f.sim.set_namespace_type("fabrikam.com", "Unknown");
    let now_unknown = response_json(&f, &realm("probe@fabrikam.com")).await;
    assert_eq!(now_unknown["NameSpaceType"], "Unknown");
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

#[tokio::test]
async fn token_with_client_secret_and_graph_use() {
    let f = start().await;
    let response = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store, no-cache")
    );
    assert!(header(&response, "x-ms-request-id").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());

    // By domain, too.
    let by_domain = token_with_secret(&f, "contoso.com", CLIENT_ID, SECRET).await;
    assert_eq!(by_domain.status(), StatusCode::OK);

    let log = f.sim.requests();
    let last = log.last().unwrap();
    assert_eq!(last.server, SimServer::Login);
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/contoso.com/oauth2/v2.0/token");
    assert!(last.authorized);
    assert_eq!(last.status, 200);
    assert_eq!(
        last.client_request_id.as_deref(),
        Some("0d1e2f30-0000-4000-8000-0000000c1e47")
    );
    assert!(!format!("{log:?}").contains(SECRET));
}

#[tokio::test]
async fn token_errors_for_secret_app_and_tenant() {
    let f = start().await;
    let wrong = token_with_secret(&f, TID, CLIENT_ID, "not-the-secret").await;
    let body = assert_login_error(wrong, 401, "invalid_client", 7000215).await;
    // Entra adopts the client-request-id as correlation id.
    assert_eq!(
        body["correlation_id"],
        "0d1e2f30-0000-4000-8000-0000000c1e47"
    );
    assert!(!f.sim.requests().last().unwrap().authorized);

    let unregistered = token_with_secret(&f, OTHER_TID, CLIENT_ID, SECRET).await;
    assert_login_error(unregistered, 400, "unauthorized_client", 700016).await;

    let unknown = token_with_secret(&f, "nowhere.example", CLIENT_ID, SECRET).await;
    assert_login_error(unknown, 400, "invalid_request", 90002).await;

    f.sim.remove_tenant(TID);
    let removed = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_login_error(removed, 400, "invalid_request", 90002).await;
}

#[tokio::test]
async fn forced_token_errors_and_lifetime() {
    let f = start().await;
    f.sim.set_token_error(TID, Some(7000222));
    let expired = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_login_error(expired, 401, "invalid_client", 7000222).await;
    f.sim.set_token_error(TID, Some(90055));
    let throttled = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_eq!(header(&throttled, "retry-after"), None);
    assert_login_error(throttled, 400, "temporarily_unavailable", 90055).await;
    f.sim.set_token_error(TID, Some(53003));
    let blocked = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_login_error(blocked, 400, "invalid_grant", 53003).await;

    f.sim.set_token_error(TID, None);
    f.sim.set_token_lifetime(60);
    let ok: Value = token_with_secret(&f, TID, CLIENT_ID, SECRET)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["expires_in"], 60);
}

#[tokio::test]
async fn token_with_rs256_and_ps256_assertions() {
    let f = start().await;
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let assertion = Assertion::valid(&f, alg).sign();
        let response = token_with_assertion(&f, TID, &assertion).await;
        assert_eq!(response.status(), StatusCode::OK, "{alg:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert!(f.sim.requests().last().unwrap().authorized);
    }
    let legacy = Assertion {
        legacy_x5t: true,
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &legacy.sign()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn rejected_assertions() {
    let f = start().await;
    // A key the simulator never saw, under its own thumbprint: the key is not found.
    let unregistered = Assertion {
        key_pem: TEST_OTHER_KEY_PEM,
        cert_pem: TEST_OTHER_CERT_PEM,
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &unregistered.sign()).await;
    assert_login_error(response, 401, "invalid_client", 700027).await;

    // The registered thumbprint but signed with another key: the signature fails.
    let forged = Assertion {
        key_pem: TEST_OTHER_KEY_PEM,
        ..Assertion::valid(&f, Algorithm::PS256)
    };
    let response = token_with_assertion(&f, TID, &forged.sign()).await;
    assert_login_error(response, 401, "invalid_client", 700027).await;

    let stale = Assertion {
        nbf: now_s() - 1200,
        exp: now_s() - 600,
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &stale.sign()).await;
    assert_login_error(response, 400, "invalid_client", 700024).await;

    let early = Assertion {
        nbf: now_s() + 600,
        exp: now_s() + 1200,
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &early.sign()).await;
    assert_login_error(response, 400, "invalid_client", 700024).await;

    let wrong_cloud = Assertion {
        aud: format!("https://login.microsoftonline.us/{TID}/oauth2/v2.0/token"),
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &wrong_cloud.sign()).await;
    assert_login_error(response, 400, "invalid_client", 700023).await;

    let response = token_with_assertion(&f, TID, "not.a.jwt").await;
    assert_login_error(response, 400, "invalid_request", 50027).await;
    assert!(f.sim.requests().iter().all(|request| !request.authorized));
}

// ---------------------------------------------------------------------------------------------
// Graph

#[tokio::test]
async fn graph_refuses_missing_unknown_and_expired_bearers() {
    let f = start().await;
    let url = format!("{}/v1.0/users/admin@contoso.com", f.sim.graph_url());
    let response = f
        .http
        .get(&url)
        .header("client-request-id", "77777777-0000-4000-8000-000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&response, "www-authenticate")
        .unwrap()
        .starts_with("Bearer "));
    let request_id = header(&response, "request-id").unwrap();
    assert_eq!(
        header(&response, "client-request-id").as_deref(),
        Some("77777777-0000-4000-8000-000000000001")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(
        body["error"]["innerError"]["request-id"],
        request_id.as_str()
    );
    assert_eq!(
        body["error"]["innerError"]["client-request-id"],
        "77777777-0000-4000-8000-000000000001"
    );
    assert!(body["error"]["innerError"]["date"].is_string());

    let forged = f.http.get(&url).bearer_auth("forged").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    f.sim.set_token_lifetime(0);
    let expired = f.sim.issue_token(TID);
    let response = f.http.get(&url).bearer_auth(expired).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let requests = f.sim.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests
        .iter()
        .all(|request| request.server == SimServer::Graph && !request.authorized));
}

// ---------------------------------------------------------------------------------------------
// RDAP

#[tokio::test]
async fn rdap_bootstrap_and_domain_objects() {
    let f = start().await;
    f.sim
        .set_rdap("contoso.com", SimRdap::expiring("2027-08-13T04:00:00Z"));
    f.sim.set_rdap(
        "contoso.nl",
        SimRdap {
            status: vec!["redemption period".to_owned()],
            ..SimRdap::default()
        },
    );
    let bootstrap = response_json(&f, &f.sim.rdap_bootstrap_url()).await;
    assert_eq!(bootstrap["version"], "1.0");
    assert!(bootstrap["publication"].is_string());
    let base = format!("{}/", f.sim.rdap_base_url());
    assert_eq!(bootstrap["services"], json!([[["com", "nl"], [base]]]));

    let url = format!("{}/domain/contoso.com", f.sim.rdap_base_url());
    let response = f.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/rdap+json")
    );
    let domain: Value = response.json().await.unwrap();
    assert_eq!(domain["objectClassName"], "domain");
    assert_eq!(domain["ldhName"], "CONTOSO.COM");
    assert_eq!(domain["status"], json!(["active"]));
    let events = domain["events"].as_array().unwrap();
    let event = |action: &str| {
        events
            .iter()
            .find(|event| event["eventAction"] == action)
            .map(|event| event["eventDate"].clone())
    };
    assert_eq!(event("expiration"), Some(json!("2027-08-13T04:00:00Z")));
    assert!(event("registration").is_some());
    assert!(event("last update of RDAP database").is_some());
    assert_eq!(domain["entities"][0]["roles"], json!(["registrar"]));
    assert_eq!(
        domain["entities"][0]["vcardArray"][1][1],
        json!(["fn", {}, "text", "Example Registrar LLC"])
    );

    let missing = f
        .http
        .get(format!("{}/domain/unknown.com", f.sim.rdap_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["errorCode"], 404);
    assert_eq!(body["title"], "Not Found");

    f.sim.remove_rdap_service("nl");
    let bootstrap = response_json(&f, &f.sim.rdap_bootstrap_url()).await;
    assert_eq!(bootstrap["services"][0][0], json!(["com"]));
}

// ---------------------------------------------------------------------------------------------
// Faults and the request log

#[tokio::test]
async fn faults_on_login_and_rdap() {
    let f = start().await;
    let discovery = discovery_url(&f, TID);
    f.sim.inject(Fault {
        path_contains: "openid-configuration".to_owned(),
        kind: FaultKind::TooManyRequests {
            retry_after_s: Some(7),
        },
        times: 2,
    });
    for _ in 0..2 {
        let response = f.http.get(&discovery).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&response, "retry-after").as_deref(), Some("7"));
    }
    assert_eq!(f.http.get(&discovery).send().await.unwrap().status(), 200);

    f.sim.inject(Fault::once(
        "",
        FaultKind::Unavailable {
            retry_after_s: None,
        },
    ));
    let unavailable = f.http.get(&discovery).send().await.unwrap();
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&unavailable, "retry-after"), None);

    f.sim
        .inject(Fault::once("/dns.json", FaultKind::GatewayTimeout));
    let timeout = f.http.get(f.sim.rdap_bootstrap_url()).send().await.unwrap();
    assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(timeout.bytes().await.unwrap().is_empty());

    f.sim
        .inject(Fault::once("openid", FaultKind::TruncatedJson));
    let truncated = f.http.get(&discovery).send().await.unwrap();
    assert_eq!(truncated.status(), StatusCode::OK);
    let text = truncated.text().await.unwrap();
    assert!(text.starts_with("{\""), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err());

    f.sim
        .inject(Fault::once("openid", FaultKind::MalformedJson));
    let malformed = f.http.get(&discovery).send().await.unwrap();
    assert_eq!(malformed.status(), StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&malformed.bytes().await.unwrap()).is_err());

    f.sim.inject(Fault::once(
        "openid",
        FaultKind::Delay(Duration::from_millis(300)),
    ));
    let started = tokio::time::Instant::now();
    let delayed = f.http.get(&discovery).send().await.unwrap();
    assert_eq!(delayed.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let statuses: Vec<(SimServer, u16)> = f
        .sim
        .requests()
        .iter()
        .map(|request| (request.server, request.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (SimServer::Login, 429),
            (SimServer::Login, 429),
            (SimServer::Login, 200),
            (SimServer::Login, 503),
            (SimServer::Rdap, 504),
            (SimServer::Login, 200),
            (SimServer::Login, 200),
            (SimServer::Login, 200),
        ]
    );
    f.sim.clear_requests();
    assert!(f.sim.requests().is_empty());
}
